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
``tests.dbtools.upgrades_at_once``) and returns when all have ended. ``Popen`` is the
same child with ``subprocess.Popen``'s interface (pipes, ``poll``, ``wait``,
``communicate``, signals), for processes a test talks to while they run: servers, an
upgrade whose output is read line by line. The pipes are real pipes, passed to the
helper over a Unix socket; the helper stays the child's parent and reaps it when asked.

Where the interpreter's own start-up is what a test is about, run the real command.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

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
    # the API server (``flowdb server start``): its app and what serving it imports
    "uvicorn",
    "uvicorn.main",
    "uvicorn.server",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.on",
    "flowdb.cli.server",
    "flowdb.server.app",
)

#: The largest request (a batch's environment and commands) and the most fds it carries.
MESSAGE_BYTES = 1 << 20
MAX_FDS = 3 * 64


# --- the helper process (``python -m tests.forkserver``) ---------------------------------


def _child(
    request: dict[str, Any], command: Sequence[str], streams: Sequence[int], batch: Sequence[int]
) -> None:
    """In the forked child: become the requested ``python`` command; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, target in zip(streams, (0, 1, 2), strict=True):
            os.dup2(fd, target)
        for fd in batch:  # this child's and its siblings' ends: only 0, 1, 2 stay
            with contextlib.suppress(OSError):
                os.close(fd)
        if os.environ.get("PYTHONUNBUFFERED"):  # what ``-u`` gives a fresh interpreter
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, io.TextIOWrapper):
                    stream.reconfigure(write_through=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            if command[0] == "-m":
                import runpy

                sys.argv = [command[1], *command[2:]]
                # Run the module afresh, as ``python -m`` does: for a package, its __main__
                # (the package itself stays, with the submodules imported under it).
                preloaded = sys.modules.get(command[1])
                is_package = preloaded is not None and hasattr(preloaded, "__path__")
                sys.modules.pop(f"{command[1]}.__main__" if is_package else command[1], None)
                runpy.run_module(command[1], run_name="__main__", alter_sys=True)
            else:  # -c CODE ARGS
                sys.argv = ["-c", *command[2:]]
                exec(compile(command[1], "<string>", "exec"), {"__name__": "__main__"})
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


def _start(request: dict[str, Any], fds: list[int]) -> list[int]:
    """Fork a child for each command of ``request``, one right after the other; each gets
    the next three of ``fds`` as its stdin, stdout and stderr. Returns their pids."""
    pids = []
    for n, command in enumerate(request["commands"]):
        streams = fds[3 * n : 3 * n + 3]
        pid = os.fork()
        if pid == 0:
            _child(request, command, streams, fds)
        pids.append(pid)
        for fd in streams:
            os.close(fd)
    return pids


def _returncode(pid: int) -> int | None:
    """``pid``'s exit code as ``subprocess`` reports it, once it has ended; else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def serve() -> None:
    """Answer the requests that arrive on stdin (one end of a Unix socket), one message
    each: ``start`` forks children (``_start``) and answers their pids; ``poll`` reaps the
    named children that have ended and answers their exit codes (None: still running)."""
    for name in PRELOAD:
        importlib.import_module(name)
    # The children's collections leave the imported modules alone (never garbage), and
    # so do not touch, and copy, the pages they share with this process.
    gc.freeze()
    channel = socket.socket(fileno=0)
    channel.send(b"ready")
    while True:
        message, fds, _, _ = socket.recv_fds(channel, MESSAGE_BYTES, MAX_FDS)
        if not message:
            return  # the test process closed its end
        request = json.loads(message)
        if request["op"] == "start":
            reply: dict[str, Any] = {"pids": _start(request, fds)}
        else:
            reply = {"returncodes": [_returncode(pid) for pid in request["pids"]]}
        channel.send(json.dumps(reply).encode())


# --- the client (the test process) ------------------------------------------------------


class _Server:
    """The helper of this test process, started at its first request."""

    def __init__(self) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.forkserver"],
                stdin=theirs.fileno(),
                cwd=os.getcwd(),
                env={k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")},
            )
        self.lock = threading.Lock()  # one request and its answer at a time
        assert self._receive(120) == b"ready"
        atexit.register(self.close)

    def _receive(self, timeout: float) -> bytes:
        with selectors.DefaultSelector() as selector:
            selector.register(self.channel, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"the fork server did not answer within {timeout} s")
        answer = self.channel.recv(MESSAGE_BYTES)
        if not answer:
            raise RuntimeError("the fork server ended")
        return answer

    def ask(self, request: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        """Send ``request`` (with ``fds``) and return the helper's answer."""
        with self.lock:
            socket.send_fds(self.channel, [json.dumps(request).encode()], list(fds))
            answer: dict[str, Any] = json.loads(self._receive(60))
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.channel.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_server: _Server | None = None
_server_pid: int | None = None


def _helper() -> _Server:
    """This test process's helper, started (again) when it has none running."""
    global _server, _server_pid
    if _server is None or _server_pid != os.getpid() or _server.process.poll() is not None:
        _server, _server_pid = _Server(), os.getpid()
    return _server


class Popen(subprocess.Popen[Any]):
    """A fork-server child with the parts of ``subprocess.Popen`` the tests use.

    ``Popen(["-m", MODULE, *ARGS], env=..., stdout=PIPE, ...)`` is
    ``subprocess.Popen([sys.executable, "-m", MODULE, *ARGS], ...)``, forked from the
    helper. ``stdin``, ``stdout`` and ``stderr`` take ``PIPE``, ``DEVNULL``, an open file
    or None (this process's own); pipes are file objects, as ``subprocess`` makes them
    (text by default).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        text: bool = True,
    ) -> None:
        # Not subprocess.Popen.__init__: the helper forks this child, not this process.
        ours, theirs = _streams((stdin, stdout, stderr))
        [pid] = _fork([args], env, theirs)
        self._adopt(args, pid, text)
        modes = ("w", "r", "r") if text else ("wb", "rb", "rb")
        pipes: list[Any] = [
            None if fd is None else os.fdopen(fd, mode, encoding="utf-8" if text else None)
            for fd, mode in zip(ours, modes, strict=True)
        ]
        self.stdin, self.stdout, self.stderr = pipes

    @classmethod
    def _forked(cls, args: Sequence[str], pid: int) -> Popen:
        """The child ``pid`` (``args``) forked with streams this process keeps no end of."""
        child = cls.__new__(cls)
        child._adopt(args, pid, text=False)
        child.stdin = child.stdout = child.stderr = None
        return child

    def _adopt(self, args: Sequence[str], pid: int, text: bool) -> None:
        self.args = [sys.executable, *args]
        self.pid = pid
        self.returncode: Any = None
        self._child_created = False  # nothing for subprocess.Popen.__del__ to reap
        self.text_mode = text
        self._output: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self._helper = _helper()

    def poll(self) -> int | None:
        """The exit code once the child has ended (asks the helper, which reaps it)."""
        if self.returncode is None:
            self.returncode = self._helper.ask({"op": "poll", "pids": [self.pid]})["returncodes"][0]
        return self.returncode  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child ends; ``subprocess.TimeoutExpired`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return self.returncode  # type: ignore[no-any-return]

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Write ``input``, read both outputs to their end, wait; as ``subprocess`` does,
        output read before a ``TimeoutExpired`` is kept for the next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None and not self.stdin.closed:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        with selectors.DefaultSelector() as selector:
            for name, pipe in (("stdout", self.stdout), ("stderr", self.stderr)):
                if pipe is not None and not pipe.closed:
                    selector.register(pipe.fileno(), selectors.EVENT_READ, name)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        self._output[key.data].append(chunk)
                    else:
                        selector.unregister(key.fd)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        results: list[Any] = []
        for name, pipe in (("stdout", self.stdout), ("stderr", self.stderr)):
            if pipe is None:
                results.append(None)
                continue
            data = b"".join(self._output[name])
            pipe.close()
            results.append(data.decode() if self.text_mode else data)
        return results[0], results[1]

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child unless it is known to have ended."""
        if self.poll() is None:
            os.kill(self.pid, sig)


def _streams(requested: Sequence[Any]) -> tuple[list[int | None], list[int]]:
    """For stdin, stdout, stderr as asked: the fds this process keeps (None where it
    keeps none) and the three the child gets."""
    ours: list[int | None] = []
    theirs: list[int] = []
    for n, how in enumerate(requested):
        if how == subprocess.PIPE:
            read, write = os.pipe()
            ours.append(write if n == 0 else read)
            theirs.append(read if n == 0 else write)
        elif how is None:  # inherited, as with subprocess
            ours.append(None)
            theirs.append(os.dup(n))
        elif how == subprocess.DEVNULL:
            ours.append(None)
            theirs.append(os.open(os.devnull, os.O_RDONLY if n == 0 else os.O_WRONLY))
        else:
            ours.append(None)
            theirs.append(os.dup(how if isinstance(how, int) else how.fileno()))
    return ours, theirs


def _fork(
    commands: Sequence[Sequence[str]], env: Mapping[str, str] | None, fds: Sequence[int]
) -> list[int]:
    """Have the helper fork ``commands`` one right after the other, each with the next
    three of ``fds`` as its stdin, stdout and stderr (closed here once sent); their pids."""
    assert commands and all(args and args[0] in ("-m", "-c") for args in commands), commands
    request = {
        "op": "start",
        "cwd": os.getcwd(),
        "env": dict(os.environ if env is None else env),
        "commands": [list(args) for args in commands],
    }
    try:
        pids: list[int] = _helper().ask(request, fds)["pids"]
    finally:
        for fd in fds:
            os.close(fd)
    return pids


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
    the other and run side by side; returns when all have ended (``timeout`` for all).

    Their outputs go to files, not pipes: racing children must not wait on a pipe that
    nobody reads while a sibling holds what they race for.
    """
    with tempfile.TemporaryDirectory(prefix="forkserver-") as folder:
        paths, fds = [], []
        for n in range(len(commands)):
            out, err = os.path.join(folder, f"{n}.stdout"), os.path.join(folder, f"{n}.stderr")
            paths.append((out, err))
            fds.append(os.open(os.devnull, os.O_RDONLY))
            fds.extend(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) for path in (out, err))
        pids = _fork(commands, env, fds)
        children = [Popen._forked(args, pid) for args, pid in zip(commands, pids, strict=True)]
        deadline = time.monotonic() + timeout
        try:
            for child in children:
                child.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            for child in children:
                child.kill()
                child.wait()
            raise subprocess.TimeoutExpired([sys.executable, *commands[0]], timeout) from None
        results = []
        for child, (out, err) in zip(children, paths, strict=True):
            with open(out, "rb") as handle:
                stdout: Any = handle.read()
            with open(err, "rb") as handle:
                stderr: Any = handle.read()
            if text:
                stdout, stderr = stdout.decode(), stderr.decode()
            results.append(
                subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
            )
    return results


if __name__ == "__main__":
    serve()
