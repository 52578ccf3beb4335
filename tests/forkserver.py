"""A per-process fork server: ``python -m`` children that start in milliseconds.

The crash and signal chains run a child per kill (hundreds per item), and most of each
child's time was an interpreter start plus the imports of flowdb, SQLAlchemy, Alembic and
the drivers. ``run`` is a drop-in for ``subprocess.run([sys.executable, "-m", MODULE,
*ARGS])`` (or ``-c CODE``): a helper process, started once per test process, imports all
of that once (no connection open), then ``os.fork()``\\ s a child per request. The child
is still a real OS process with its own pid, environment (the request's, in full),
working directory, stdin on ``/dev/null`` and stdout/stderr in files; it runs the module
as ``__main__`` as ``python -m`` would, runs the ``atexit`` handlers and exits with the
code the interpreter would (``SystemExit``'s, 1 for an exception), and a signal that
kills it (its own SIGKILL, a SIGTERM's handler) shows as ``-signum``, as with
``subprocess``. What the child changes (event listeners, patched attributes, handlers)
dies with it: the helper forks every child from the same state. ``run_together`` runs
several at once (forked one right after the other, as racing replicas are started:
``tests.dbtools.upgrades_at_once``) and returns when all have ended.

Where the interpreter's own start-up is what a test is about, run the real command.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any

#: Imported once by the helper, so that no child pays for them.
PRELOAD = (
    "sqlalchemy",
    "alembic",
    "alembic.command",
    "pymysql",
    "psycopg",
    "flowdb.cli.entry",
    "flowdb.cli.fast",
    "flowdb.cli.edge",
    "flowdb.cli.root",
    "flowdb.database.commands",
    "flowdb.database.target",
    "flowdb.database.alembic_commands",
    "flowdb.database.events",
    "flowdb.database.dialects.sqlite",
    "flowdb.database.dialects.postgresql",
    "flowdb.database.dialects.mysql",
    # imported by the commands as they run (Typer's coercion, the views' rendering)
    "pydantic",
    "typer._adapters",
    "rich.console",
    "rich.live",
    "rich.table",
    "flowdb.cli.current_view",
    "flowdb.cli.fleet_view",
    "flowdb.database.fleet",
    "tests.database.kill_after",
    "tests.database.signal_after",
)


# --- the helper process (``python -m tests.forkserver``) ---------------------------------


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the requested ``python`` command; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_TRUNC)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_TRUNC)
        for fd, target in ((devnull, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        args = request["args"]
        try:
            if args[0] == "-m":
                import runpy

                sys.argv = [args[1], *args[2:]]
                sys.modules.pop(args[1], None)  # preloaded: run afresh, as ``python -m`` does
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:  # -c CODE ARGS
                sys.argv = ["-c", *args[2:]]
                exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as end:
            if end.code is None:
                code = 0
            elif isinstance(end.code, int):
                code = end.code
            else:
                print(end.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream has nothing to write
                stream.flush()
    finally:
        os._exit(code & 0xFF)


def serve() -> None:
    """Read one JSON batch of requests a line on stdin; fork a child for each, one right
    after the other; answer their pids, then (once all have ended) their return codes."""
    for name in PRELOAD:
        importlib.import_module(name)
    requests, replies = sys.stdin, sys.stdout
    replies.write("ready\n")
    replies.flush()
    for line in requests:
        pids = []
        for request in json.loads(line):
            pid = os.fork()
            if pid == 0:
                _child(request)
            pids.append(pid)
        replies.write(json.dumps({"pids": pids}) + "\n")
        replies.flush()
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        replies.write(json.dumps({"returncodes": codes}) + "\n")
        replies.flush()


# --- the client (the test process) ------------------------------------------------------


class _Server:
    """The helper of this test process, started at its first request."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=os.getcwd(),
            env={k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")},
        )
        assert self._read(120) == "ready"
        atexit.register(self.close)

    @property
    def _replies(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def _read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self._replies], [], [], timeout)
        if not ready:
            return None
        line = self._replies.readline()
        if not line:
            raise RuntimeError("the fork server ended")
        return line.strip()

    def run(self, batch: list[dict[str, Any]], timeout: float) -> list[int]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(batch) + "\n")
        self.process.stdin.flush()
        started = self._read(60)
        assert started is not None, "the fork server did not fork"
        pids = json.loads(started)["pids"]
        done = self._read(timeout)
        if done is None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._read(60)
            raise subprocess.TimeoutExpired(batch[0]["args"], timeout)
        return [int(code) for code in json.loads(done)["returncodes"]]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_server: _Server | None = None
_server_pid: int | None = None


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Like ``subprocess.run([sys.executable, *args], stdin=DEVNULL, capture_output=True)``.

    ``args``: ``["-m", MODULE, *ARGS]`` or ``["-c", CODE, *ARGS]``.
    """
    return run_together([args], env=env, timeout=timeout, text=text)[0]


def run_together(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    text: bool = True,
) -> list[subprocess.CompletedProcess[Any]]:
    """``run`` for each of ``commands`` at once: the children are forked one right after
    the other and run side by side; returns when all have ended (``timeout`` for all)."""
    global _server, _server_pid
    assert commands and all(args and args[0] in ("-m", "-c") for args in commands), commands
    if _server is None or _server_pid != os.getpid() or _server.process.poll() is not None:
        _server, _server_pid = _Server(), os.getpid()
    environment = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="forkserver-") as folder:
        batch = []
        for n, args in enumerate(commands):
            out, err = os.path.join(folder, f"{n}.stdout"), os.path.join(folder, f"{n}.stderr")
            for path in (out, err):
                open(path, "wb").close()
            batch.append(
                {
                    "args": list(args),
                    "env": environment,
                    "cwd": os.getcwd(),
                    "stdout": out,
                    "stderr": err,
                }
            )
        returncodes = _server.run(batch, timeout)
        results = []
        for request, returncode in zip(batch, returncodes, strict=True):
            with open(request["stdout"], "rb") as handle:
                stdout: Any = handle.read()
            with open(request["stderr"], "rb") as handle:
                stderr: Any = handle.read()
            if text:
                stdout, stderr = stdout.decode(), stderr.decode()
            command = [sys.executable, *request["args"]]
            results.append(subprocess.CompletedProcess(command, returncode, stdout, stderr))
    return results


if __name__ == "__main__":
    serve()
