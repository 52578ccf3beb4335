"""Running the ``flowdb`` command in the test's own process, as a subprocess would run it.

A subprocess costs about two seconds under load (the interpreter, then SQLAlchemy and
Alembic imported again); most CLI tests only need what ``flowdb.cli.root.main`` prints
and the code it exits with. ``run_main`` calls that same ``main()`` with the process
state a child would have had (environment, working folder, argv, no terminal on stdin)
and puts everything back afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from flowdb import interrupts


@contextlib.contextmanager
def _process_state(environment: dict[str, str], cwd: Path | None) -> Iterator[None]:
    """Swap in a child's environment, working folder and signal handling; restore them.

    ``main`` ignores SIGINT/SIGTERM once its outcome is said (``interrupts.close``; off
    the main thread it blocks them), and both are inherited by every process the test
    starts afterwards, which would then never see the signals a test sends: the
    handlers, the mask and flowdb's process-wide signal record are put back as they were.
    """
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    saved_record = dict(vars(interrupts._State))
    saved_hook = sys.unraisablehook
    saved_argv = sys.argv
    os.environ.clear()
    os.environ.update(environment)
    try:
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        for signum, handler in saved_handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        for name, value in saved_record.items():
            if not name.startswith("__"):
                setattr(interrupts._State, name, value)
        sys.unraisablehook = saved_hook
        sys.argv = saved_argv


@contextlib.contextmanager
def _migrations_folder(folder: Path | None) -> Iterator[None]:
    """Point flowdb at another migrations folder (a test's own history) for one run."""
    if folder is None:
        yield
        return
    from flowdb.database import history

    saved = history.MIGRATIONS_FOLDER
    history.MIGRATIONS_FOLDER = folder
    try:
        yield
    finally:
        history.MIGRATIONS_FOLDER = saved


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """Logging as a new process has it: no root handlers (so ``logging.lastResort``
    writes warnings to the current stderr), root level WARNING; pytest's are put back."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def run_main(
    environment: dict[str, str],
    args: list[str],
    *,
    cwd: Path | None = None,
    migrations: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``flowdb ARGS`` through ``main()`` in this process; the result a subprocess gives.

    A bug that escapes ``main()`` is printed as the interpreter would print it (a
    traceback on stderr, exit 1), so the tests that forbid tracebacks still see it.
    """
    from flowdb.cli.root import main

    def run(_stdout: io.StringIO) -> None:
        main()

    contexts = (_process_state(environment, cwd), _migrations_folder(migrations))
    return _as_a_process("flowdb", args, run, contexts)


def _as_a_process(
    program: str,
    args: list[str],
    run: Callable[[io.StringIO], None],
    contexts: Iterable[contextlib.AbstractContextManager[object]],
) -> subprocess.CompletedProcess[str]:
    """Call ``run`` (given the captured stdout) as ``PROGRAM ARGS`` would run in a child:
    inside ``contexts`` (the child's process state), with stdin empty, stdout and stderr
    captured, logging fresh, and its exit (``sys.exit``, or an escaping exception's
    traceback and status 1) turned into the exit status a process would give."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        stack.enter_context(_fresh_logging())
        stack.enter_context(contextlib.redirect_stdout(stdout))
        stack.enter_context(contextlib.redirect_stderr(stderr))
        saved_stdin = sys.stdin
        sys.stdin = io.StringIO("")
        sys.argv = [program, *args]
        try:
            run(stdout)
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code, stderr)
        except Exception:
            traceback.print_exc(file=stderr)
            code = 1
        finally:
            sys.stdin = saved_stdin
    return subprocess.CompletedProcess([program, *args], code, stdout.getvalue(), stderr.getvalue())


def _exit_code(code: object, stderr: io.StringIO) -> int:
    """The process exit status ``sys.exit(code)`` gives (a message goes to stderr, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stderr)
    return 1


def run_alembic(
    environment: dict[str, str], args: list[str], *, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` through Alembic's command line in this process.

    What the ``alembic`` script installed beside the interpreter runs
    (``alembic.config:main``: ``CommandLine`` parses, ``Config`` and ``run_cmd``), with
    the process state a child would have had; a failure Alembic reports (``FAILED: ...``
    and ``sys.exit``) gives its exit status.
    """
    from alembic.config import CommandLine, Config

    def run(stdout: io.StringIO) -> None:
        """``alembic.config.main``, but printing to this run's stdout: ``Config`` binds
        ``sys.stdout`` as it was when Alembic was imported."""
        command_line = CommandLine(prog="alembic")
        options = command_line.parser.parse_args(args)
        if not hasattr(options, "cmd"):
            command_line.parser.error("too few arguments")
        toml, ini = command_line._inis_from_config(options)
        config = Config(
            file_=ini, toml_file=toml, ini_section=options.name, cmd_opts=options, stdout=stdout
        )
        command_line.run_cmd(config, options)

    return _as_a_process("alembic", args, run, (_process_state(environment, cwd),))
