"""A real PgBouncer in transaction pooling mode, started for the tests on a loopback port.

Debian's ``pgbouncer`` package provides the binary (``.ci/run`` installs it when it is
missing). The pooler runs with a temporary configuration in front of the test server
and is stopped afterwards; a missing binary fails the tests that need it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from bench.server import free_port

_BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextmanager
def running_pgbouncer(
    server_url: str, pool_mode: str = "transaction", pool_size: int = 20, ignored: str = ""
) -> Iterator[int]:
    """Start PgBouncer in front of ``server_url``'s server; yield its port; stop it.

    ``pool_size``: server connections per database and user; ``ignored``: its
    ``ignore_startup_parameters`` (comma-separated).
    """
    if not Path(_BINARY).exists():
        pytest.fail("PgBouncer is required for this test: apt-get install -y pgbouncer")
    server = sa.make_url(server_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="flowdb-pgbouncer-"))
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\nmax_client_conn = 500\ndefault_pool_size = {pool_size}\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
        + (f"ignore_startup_parameters = {ignored}\n" if ignored else "")
    )
    command = [_BINARY, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        for path in folder.iterdir():
            os.chown(path, user.pw_uid, user.pw_gid)
        command[1:1] = ["-u", "postgres"]
    # PgBouncer also logs every login to stderr: a pipe nobody reads fills up (64 KiB)
    # and blocks it mid-test. Its log file has the same lines.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "pgbouncer.log").read_text() if process.poll() else ""
                    pytest.fail(f"PgBouncer did not start: {log[-500:]}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def through(port: int, url: str) -> str:
    """``url`` with its host and port replaced by PgBouncer's."""
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
