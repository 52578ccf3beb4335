"""Ctrl-C and SIGTERM: caught from the first instant, never lost, told in one line.

The ``flowdb`` entry point (``flowdb.cli.entry``) calls ``install`` before it imports
anything heavy. From then on a signal is *recorded* and raised as ``Interrupted`` where
the program is, so transactions roll back and locks are released on the way out.

Python swallows an exception raised inside a finaliser (``__del__``, a weakref or GC
callback, such as a driver connection being collected): it prints "Exception ignored"
and carries on. Such a signal is not lost here: the hook for unraisable exceptions
keeps quiet about it and sends the signal to the main thread again a moment later, and
``check`` (called at every migration's transaction boundary and when a command
returns) raises any signal that was recorded but never reached the edge.

A leaf module: it imports only ``flowdb.errors`` and the standard library, so the
entry point can install it while the interpreter is still starting.
"""

from __future__ import annotations

import signal
import sys

from flowdb.errors import ExitCode, Interrupted

# Not ``typing.TYPE_CHECKING``: importing typing would double this module's start-up cost,
# and start-up is the window in which a signal would still kill the process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

#: The signals handled, with the word that starts their line and their exit code.
SIGNALS: dict[int, tuple[str, ExitCode]] = {
    signal.SIGINT: ("Interrupted", ExitCode.INTERRUPTED),
    signal.SIGTERM: ("Terminated", ExitCode.TERMINATED),
}
NOTHING_CHANGED = "nothing was changed"
#: How long a swallowed signal waits before it is sent again (seconds).
RESEND_DELAY = 0.05


class _State:
    """The process's one record of signals (module state: signals are process-wide)."""

    pending: int | None = None  # the first signal received, until the process ends
    swallowed: bool = False  # its exception was swallowed by a finaliser
    settled: bool = False  # the edge has reported it: later signals are only recorded
    leaves: str = NOTHING_CHANGED  # what an interrupt from now on leaves behind
    installed: bool = False


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (idempotent); call it first thing in ``main``."""
    if _State.installed:
        return
    _State.installed = True
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, Interrupted | KeyboardInterrupt) and _State.pending:
            _State.swallowed = True
            _resend_soon(_State.pending)
            return
        default_hook(info)

    sys.unraisablehook = unraisable


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _State.settled:
        return
    if _State.pending is None:
        _State.pending = signum
    elif not _State.swallowed:
        return  # the first one is on its way out already; do not interrupt its cleanup
    _State.swallowed = False
    raise Interrupted(_State.pending)


def _resend_soon(signum: int) -> None:
    """Send ``signum`` to the main thread again after ``RESEND_DELAY``, outside the finaliser.

    A real signal (not a flag) so that a blocking read in the main thread is woken too.
    """
    import threading

    main = threading.main_thread().ident
    if main is None:  # pragma: no cover - the main thread always has an ident
        return

    def resend() -> None:
        if _State.swallowed and not _State.settled:
            signal.pthread_kill(main, signum)

    timer = threading.Timer(RESEND_DELAY, resend)
    timer.daemon = True
    timer.start()


def check() -> None:
    """Raise ``Interrupted`` if a signal was received and has not ended the command yet.

    Called where stopping is clean (before each migration's transaction begins), so a
    signal whose exception something swallowed still stops the work at the next step.
    """
    if _State.pending is not None and not _State.settled:
        raise Interrupted(_State.pending)


def pending() -> int | None:
    """The signal received so far (``None``: none)."""
    return _State.pending


def leaves(outcome: str) -> None:
    """Say what an interrupt from now on leaves behind (the end of the one line)."""
    _State.leaves = outcome


def settle(signum: int) -> tuple[str, int]:
    """The outcome is an interrupt: return ``signum``'s one line and exit code.

    Later signals are too late to change it (``close``).
    """
    close()
    _State.pending = _State.pending or signum
    word, code = SIGNALS.get(signum, SIGNALS[signal.SIGINT])
    return f"{word}; {_State.leaves}.", int(code)


def close() -> None:
    """The command's outcome is decided (and said): later signals change nothing.

    They are blocked, not just ignored: while the interpreter shuts down it puts the
    default handlers back, which would kill the process and replace its exit code.
    """
    _State.settled = True
    if _State.installed:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
