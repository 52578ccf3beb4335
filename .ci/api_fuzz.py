"""CI: schemathesis with every check against a real server, on SQLite and on PostgreSQL.

For each dialect: a fresh database, ``flowdb server start`` on a free port (admin
routes off, so nothing drops the tables), then ``st run`` over the served OpenAPI
document with ``--checks all`` and no exclusions. Exits non-zero when any run fails.
Run from the repository root: ``python .ci/api_fuzz.py [--max-examples N]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.server import free_port
from tests import web
from tests.dbtools import create_postgres_database, drop_postgres_database


def fuzz(url: str, max_examples: int) -> int:
    """Serve ``url`` and run schemathesis against it; its exit code."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env |= {"FLOWDB_DATABASE_URL": url, "FLOWDB_HOME": tempfile.mkdtemp(prefix="flowdb-fuzz-")}
    command = [sys.executable, "-m", "flowdb", "server", "start", "--log-level", "warning"]
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if web.get(f"{base}/api/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"the server on {url} did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        st = Path(sys.executable).with_name("st")
        return subprocess.run(
            [
                str(st),
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(max_examples),
                "--workers",
                "1",  # CPython 3.11's ast.parse, which hypothesis calls, is not thread-safe
                "--seed",
                "14",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            check=False,
        ).returncode
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    """Fuzz both dialects; non-zero if either failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=15)
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="flowdb-fuzz-") as folder:
        print("+ schemathesis on SQLite", flush=True)
        failures += fuzz(f"sqlite:///{folder}/fuzz.db", args.max_examples) != 0
    print("+ schemathesis on PostgreSQL", flush=True)
    postgres = create_postgres_database()
    try:
        failures += fuzz(postgres, args.max_examples) != 0
    finally:
        drop_postgres_database(postgres)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
