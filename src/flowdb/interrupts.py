"""Ctrl-C and SIGTERM: caught from flowdb's first line, never lost, told in one line.

The ``flowdb`` entry point (``flowdb.cli.entry``) calls ``install`` before it imports
anything heavy. From then on a signal is *recorded* and raised as ``Interrupted`` where
the program is, so transactions roll back and locks are released on the way out.

Python swallows an exception raised inside a finaliser (``__del__``, a weakref or GC
callback, such as a driver connection being collected): it prints "Exception ignored"
and carries on. Such a signal is not lost here: the hook for unraisable exceptions
keeps quiet about it and sends the signal to the main thread again a moment later, and
``check`` (called at every migration's transaction boundary and when a command
returns) raises any signal that was recorded but never reached the edge. A C extension
calling back into Python can swallow it too: psycopg's notice receiver (a NOTICE from
the server while a migration runs) prints the exception's traceback through
``sys.excepthook`` before it passes it to the unraisable hook, so flowdb's excepthook
keeps quiet about a signal's exception too, and the unraisable hook sends it again.

A leaf module that imports only built-in modules (``_signal``, not ``signal``, which
pulls in ``enum``; ``flowdb.errors`` only once the handlers are in place), so the
entry point installs the handlers within milliseconds of the interpreter's start.
"""

from __future__ import annotations

import sys
import time

# Not ``typing.TYPE_CHECKING``: importing typing would double this module's start-up cost,
# and start-up is the window in which a signal would still kill the process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from types import FrameType
    from typing import Any
else:
    import _signal

#: The signals handled, with the word that starts their line and their exit code
#: (``errors.ExitCode.INTERRUPTED`` and ``TERMINATED``; a test keeps them equal).
SIGNALS: dict[int, tuple[str, int]] = {
    _signal.SIGINT: ("Interrupted", 130),
    _signal.SIGTERM: ("Terminated", 143),
}
NOTHING_CHANGED = "nothing was changed"
#: How long a swallowed signal waits before it is sent again (seconds).
RESEND_DELAY = 0.05
#: A signal this soon after the last raise is a copy of it, not a second request.
REPEAT_AFTER = 1.0


class _State:
    """The process's one record of signals (module state: signals are process-wide)."""

    pending: int | None = None  # the first signal received, until the process ends
    swallowed: bool = False  # its exception was swallowed by a finaliser
    settled: bool = False  # the edge has reported it: later signals are only recorded
    leaves: str = NOTHING_CHANGED  # what an interrupt from now on leaves behind
    installed: bool = False
    raised_at: float = 0.0  # when ``Interrupted`` was last raised (monotonic seconds)


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (idempotent); call it first thing in ``main``."""
    if _State.installed:
        return
    _State.installed = True
    for signum in SIGNALS:
        _signal.signal(signum, _handle)
    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if is_interrupt(info.exc_value) and _State.pending:
            _State.swallowed = True
            _resend_soon(_State.pending)
            return
        default_hook(info)

    sys.unraisablehook = unraisable
    default_excepthook = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        if is_interrupt(error) and _State.pending:
            return  # a callback's caller printing what it then swallows (see above)
        default_excepthook(kind, error, traceback)

    sys.excepthook = excepthook


class EarlyInterrupt(BaseException):
    """What a signal raises before ``flowdb.errors`` (and its ``Interrupted``) is imported.

    Not ``KeyboardInterrupt``: the interpreter remembers one that escaped an import and
    then exits with 130 even for SIGTERM, whatever exit code the CLI chose.
    """


def is_interrupt(error: BaseException | None) -> bool:
    """Whether ``error`` is what a signal raises (``Interrupted``, or an earlier kind)."""
    return isinstance(error, KeyboardInterrupt | EarlyInterrupt) or (
        type(error).__name__ == "Interrupted"
    )


def _exception(signum: int) -> BaseException:
    """``errors.Interrupted(signum)``; ``EarlyInterrupt`` while errors is still importing."""
    errors = sys.modules.get("flowdb.errors")
    interrupted = getattr(errors, "Interrupted", None)
    return interrupted(signum) if interrupted is not None else EarlyInterrupt(signum)


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _State.settled:
        return
    now = time.monotonic()
    if _State.pending is None:
        _State.pending = signum
    elif not _State.swallowed and now - _State.raised_at < REPEAT_AFTER:
        return  # the same keypress twice (or a forwarded copy): let the cleanup run
    # Otherwise: sent again after a finaliser swallowed it, or a later Ctrl-C while the
    # first one's exception was dropped somewhere (or its cleanup hangs): raise again.
    _State.swallowed = False
    _State.raised_at = now
    raise _exception(_State.pending)


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
            _signal.pthread_kill(main, signum)

    timer = threading.Timer(RESEND_DELAY, resend)
    timer.daemon = True
    timer.start()


def check() -> None:
    """Raise ``Interrupted`` if a signal was received and has not ended the command yet.

    Called where stopping is clean (before each migration's transaction begins), so a
    signal whose exception something swallowed still stops the work at the next step.
    """
    if _State.pending is not None and not _State.settled:
        raise _exception(_State.pending)


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
    word, code = SIGNALS.get(signum, SIGNALS[_signal.SIGINT])
    return f"{word}; {_State.leaves}.", code


def close() -> None:
    """The command's outcome is decided (and said): later signals change nothing.

    They are ignored, process-wide. While the interpreter shuts down it puts the default
    handler back for every signal that has a Python handler (not for an ignored one),
    and a signal then would kill the process and replace its exit code. Blocking them
    was not enough: a mask is per thread, and a thread started before (Rich's live
    display's refresh thread outlives the display by up to a refresh interval) still
    took the signal: "Upgrade finished" printed, then the process died of the SIGINT.
    Off the main thread (where Python cannot set handlers) they are blocked in it.
    """
    _State.settled = True
    if not _State.installed:
        return
    try:
        for signum in SIGNALS:
            _signal.signal(signum, _signal.SIG_IGN)
    except ValueError:  # not the main thread
        _signal.pthread_sigmask(_signal.SIG_BLOCK, set(SIGNALS))
