"""Workers of ``flowdb server start --workers N`` forked from their master, not spawned.

uvicorn starts each worker as a new interpreter (multiprocessing's "spawn"), which
imports the whole server stack again: about 1.1 s of CPU per worker here, paid again
for every worker uvicorn replaces, while the master has imported it all already (the
command does, to fail before serving). A forked worker starts from the master's state at
once and shares its memory pages until it writes them.

Forking is safe only from a quiet master: one thread (no lock held by another thread can
be copied half-taken) and no open database connection (the command's engines pool
nothing), and the worker must not keep what the master set up for itself. So
``fork_workers`` flushes the standard streams before each fork (or the worker would
print the master's buffered text again) and, in the worker, puts every signal handler
the master installed (uvicorn's supervisor's, the CLI's interrupt line) back to the
interpreter's default, as a new interpreter has them.

uvicorn has no option for the start method: its supervisor takes the multiprocessing
context from ``uvicorn._subprocess.spawn``. Replacing that one attribute is flowdb's only
reach into uvicorn's internals; ``tests/server/test_forking.py`` fails when uvicorn
moves it, and until then ``fork_workers`` leaves spawn in place (slower, still right).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from types import ModuleType


def fork_workers() -> bool:
    """Make uvicorn fork this process for its workers; whether it will.

    Call it in the master right before ``uvicorn.run``. Nothing changes (and False is
    returned) when uvicorn keeps its context elsewhere or another thread still runs a
    second later.
    """
    supervisor_processes = _uvicorn_subprocess()
    if supervisor_processes is None or not _only_thread():
        return False
    os.register_at_fork(before=_flush_std_streams, after_in_child=_default_signal_handlers)
    supervisor_processes.spawn = multiprocessing.get_context("fork")  # type: ignore[attr-defined]
    return True


def _uvicorn_subprocess() -> ModuleType | None:
    """uvicorn's module that starts workers, if it still keeps its context where we look."""
    try:
        from uvicorn import _subprocess
    except ImportError:
        return None
    context = getattr(_subprocess, "spawn", None)
    return _subprocess if isinstance(context, multiprocessing.context.BaseContext) else None


def _only_thread(grace: float = 1.0) -> bool:
    """Whether this is the process's only thread, once the others have had ``grace``
    seconds to end (a progress display's refresh thread is told to stop, not waited for)."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return threading.active_count() == 1


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _default_signal_handlers() -> None:
    """Every Python-level signal handler back to the interpreter's own default."""
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except ValueError:
            continue
        if not callable(handler) or handler is signal.default_int_handler:
            continue  # the default, SIG_IGN or a handler set outside Python: left alone
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, default)
