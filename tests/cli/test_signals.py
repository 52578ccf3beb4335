"""Ctrl-C and SIGTERM at any moment of a real ``flowdb database upgrade -y``: one line, never lost.

Each trial starts ``python -m flowdb database upgrade -y`` on a database a few revisions
in, waits until the process handles SIGTERM (``/proc/PID/status``: before that the
interpreter itself is still starting, and no Python code can run), then sends SIGINT or
SIGTERM after a delay spread over the whole run: the imports of the first second, the
lock, the migrations, and after the end. Every trial must end with exactly one line of
its kind as the last line on stderr, exit 130 / 143, no traceback, and the database at a
revision of the history; or, when the signal came after the upgrade finished, exit 0
having said so. 40 trials per dialect (a trial's signal and delay follow from its
index), in items so that xdist spreads them: CI runs a deterministic sample of 14, one
or two per item (``SAMPLE``): the first fifth of the span densely (the imports and the
lock, where a handler missing would show) and then both signals at the start of the
second and third quarters (the migrations) and at the end of the last (the last
migrations, and after the end when the upgrade was quick), so both signals reach every
quarter of the run on each dialect, every item's first signal lands before the end, and
each trial is held to every check. The later quarters are one kind of moment each (a
migration under way, or done): two trials there cover them as well as four did, and a
late trial is a long wait; ``-m exhaustive`` runs the other 26 (items of 3 or 4): the
two together are the whole set.

The swallowed-signal cases reproduce what a driver's finaliser does to a Ctrl-C (the
exception raised inside ``__del__`` is ignored by Python) with a finaliser of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests.dbtools import DIALECTS, upgrade_process

IDS = [revision.id for revision in load_history().revisions]
HEAD = IDS[-1]
START = IDS[1]  # two tables in: the upgrade replays the rest of the history
TRIALS = 40
ITEMS = 8
#: CI's later trials: SIGINT (even) and SIGTERM (odd) in each of the last three quarters
#: of the span; the longest waits go to the items whose first trial is the quickest.
LATE = [37, 36, 21, 20, 11, 10]
#: CI's sample: item ``i`` runs trial ``i`` (the first fifth of the span) and, for the
#: first ``len(LATE)`` items, ``LATE[i]``.
SAMPLE = [*range(ITEMS), *LATE]
#: The other trials, ``exhaustive``: item ``k`` holds ``REST[k::ITEMS]``.
REST = [index for index in range(TRIALS) if index not in SAMPLE]
#: How long after the handlers are in place the signals are spread (imports, lock, the
#: migrations, the end): a MariaDB replay takes seconds, a SQLite one a fraction of one.
SPAN = {"sqlite": 1.5, "postgresql": 2.5, "mariadb": 5.0}
LINES = {
    signal.SIGINT: ("Interrupted; ", 130),
    signal.SIGTERM: ("Terminated; ", 143),
}
OUTCOMES = (
    "nothing was changed.",
    "the database stays at the last migration that completed (see 'flowdb database current').",
)


def flowdb_env(url: str, home: Path) -> dict[str, str]:
    """The environment of a child ``flowdb`` on ``url``, without the caller's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=url, FLOWDB_HOME=str(home))
    return env


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Python does not, by default)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@dataclass
class Trial:
    """One run of ``upgrade -y`` signalled ``delay`` seconds after its handlers were set."""

    signum: int
    delay: float
    returncode: int = 0
    stderr: str = ""
    stdout: str = ""
    signalled_at: float = 0.0
    finished_at: float = 0.0
    lines: list[str] = field(default_factory=list)

    def run(self, url: str, home: Path) -> None:
        process = upgrade_process(flowdb_env(url, home))
        try:
            deadline = time.monotonic() + 60
            while not handles_sigterm(process.pid) and process.poll() is None:
                assert time.monotonic() < deadline, "the handlers were never installed"
                time.sleep(0.002)
            # The delay, cut short by an upgrade that ends before it: nothing to wait for.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.delay)
            self.signalled_at = time.monotonic()
            process.send_signal(self.signum)
            self.stdout, self.stderr = process.communicate(timeout=120)
            self.finished_at = time.monotonic()
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        self.returncode = process.returncode
        self.lines = [line for line in self.stderr.splitlines() if line.strip()]

    def check(self) -> bool:
        """Assert one of the two true endings; return whether the signal landed."""
        context = f"{signal.Signals(self.signum).name} after {self.delay:.2f} s:\n{self.stderr}"
        assert "Traceback" not in self.stderr + self.stdout, context
        assert "Exception ignored" not in self.stderr, context
        assert not any(line.startswith("Error:") for line in self.lines), context
        if self.returncode == 0:
            # Too late: the upgrade had finished, and said so (its result, on stdout),
            # before the signal came.
            assert self.stdout.splitlines()[-1].startswith("Upgrade finished"), context
            assert self.finished_at - self.signalled_at < 10, f"went on after it: {context}"
            return False
        start, code = LINES[self.signum]
        assert self.returncode == code, f"exit {self.returncode}; {context}"
        ours = [line for line in self.lines if line.startswith(("Interrupted;", "Terminated;"))]
        assert len(ours) == 1 and self.lines[-1] == ours[0], context
        assert ours[0].removeprefix(start) in OUTCOMES, context
        return True


def back_to_start(url: str) -> None:
    """Put the database back at ``START``: as it is, or emptied and the first two
    revisions applied again.

    Faster than undoing what the trial did (a MariaDB downgrade from head takes seconds,
    emptying and replaying two revisions a fraction of one), and the same whatever the
    signal left, a migration part way included.
    """
    from flowdb.database import commands
    from flowdb.database.target import Database
    from tests.dbtools import reset_mariadb_database, reset_postgres_database, sqlite_path

    path = sqlite_path(url)
    if path is None or path.exists():
        status = Database.from_url(url).status()
        if status.current == START and not status.in_progress:
            return
    path = sqlite_path(url)
    if path is not None:
        for leftover in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    elif url.startswith("postgresql"):
        reset_postgres_database(url)
    else:
        assert reset_mariadb_database(url) == url
    commands.migrate(Database.from_url(url), "upgrade", START, use_snapshot=False)


def item_trials(item: int) -> list[int]:
    """The trial indices of ``item``: CI's ``0..ITEMS-1``, then the ``exhaustive`` ones.

    Every item's first trial comes in the first fifth (CI) or half (the rest) of the span,
    before the upgrade ends, so each item has a signal that lands.
    """
    if item < ITEMS:
        return [item, *LATE[item : item + 1]]
    return REST[item - ITEMS :: ITEMS]


def trial_params() -> list[object]:
    """CI's sampled items and the ``exhaustive`` rest, per dialect."""
    return [
        pytest.param(
            dialect,
            item,
            id=f"{dialect}-{item}" if item < ITEMS else f"{dialect}-rest-{item - ITEMS}",
            marks=[
                *([] if item < ITEMS else [pytest.mark.exhaustive]),
            ],
        )
        for dialect in DIALECTS
        for item in range(2 * ITEMS)
    ]


def test_the_sample_and_the_rest_are_every_trial_once() -> None:
    trials = [index for item in range(2 * ITEMS) for index in item_trials(item)]
    assert sorted(trials) == list(range(TRIALS))
    # Each item's first signal comes early enough to land before the upgrade ends.
    assert all(item_trials(item)[0] < TRIALS // 5 for item in range(ITEMS))
    assert all(item_trials(item)[0] < TRIALS // 2 for item in range(ITEMS, 2 * ITEMS))
    sampled = {(index % 2, index * 4 // TRIALS) for index in SAMPLE}
    assert len(sampled) == 8  # both signals in every quarter of the span


@pytest.mark.slow
@pytest.mark.parametrize(("dialect", "item"), trial_params())
def test_a_signal_at_any_moment_of_an_upgrade_ends_in_one_true_line(
    dialect: str, item: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests.dbtools import revision_of

    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}
    url = str(request.getfixturevalue(fixture[dialect]))
    landed = 0
    trials = item_trials(item)
    for index in trials:
        trial = Trial(
            signum=signal.SIGINT if index % 2 == 0 else signal.SIGTERM,
            delay=SPAN[dialect] * (index + 0.5) / TRIALS,
        )
        back_to_start(url)
        trial.run(url, tmp_path / "home")
        landed += trial.check()
        revision = revision_of(url)
        assert revision in IDS, f"the database is at {revision!r} after {trial}"
        if trial.returncode == 0:
            assert revision == HEAD
    print(f"{dialect}-{item}: {landed} of {len(trials)} signals landed before the end")
    assert landed > 0, "no signal landed before the upgrade finished"


# --- signals that something swallowed -------------------------------------------------------

#: A finaliser that receives the signal (``kind``: "finaliser") or a handler that catches
#: and drops it (``kind``: "except"), attached to the first migration step's report: what
#: a driver's ``__del__`` or a careless ``except BaseException`` does to a Ctrl-C.
SWALLOWER = """
import logging, os, signal, sys, time

kind, signum = sys.argv[1], int(sys.argv[2])


def receive_signal() -> None:
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # the handler runs in here
        pass


class Finaliser:
    def __del__(self) -> None:
        receive_signal()


class Swallow(logging.Handler):
    done = False

    def emit(self, record: logging.LogRecord) -> None:
        if Swallow.done or not record.getMessage().startswith("Applied"):
            return
        Swallow.done = True
        if kind == "finaliser":
            Finaliser()  # collected at once: the signal arrives inside __del__
        else:
            try:
                receive_signal()
            except BaseException:
                pass


logging.getLogger("flowdb.migrations").addHandler(Swallow())
sys.argv = ["flowdb", "database", "upgrade", "-y"]
from flowdb.cli.entry import main

main()
"""


@pytest.mark.parametrize("kind", ["finaliser", "except"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_signal_still_stops_the_upgrade_at_the_next_step(
    database_url: str, tmp_path: Path, kind: str, signum: int
) -> None:
    from flowdb.database import commands
    from flowdb.database.target import Database
    from tests.dbtools import revision_of

    commands.migrate(Database.from_url(database_url), "upgrade", START, use_snapshot=False)
    result = subprocess.run(
        [sys.executable, "-c", SWALLOWER, kind, str(int(signum))],
        env=flowdb_env(database_url, tmp_path / "home"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    trial = Trial(signum=signum, delay=0.0, returncode=result.returncode, stderr=result.stderr)
    trial.lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, f"the signal was lost:\n{result.stderr}"
    assert trial.check()
    steps = [line for line in trial.lines if line.lstrip().startswith("↑")]
    assert len(steps) <= 2, f"went on after the signal:\n{result.stderr}"
    assert revision_of(database_url) in IDS[1 : 1 + len(steps) + 1]


RESENT = """
import os, signal, sys, time
from flowdb import interrupts
from flowdb.errors import Interrupted

interrupts.install()


class Finaliser:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            pass


started = time.monotonic()
try:
    Finaliser()
    time.sleep(30)  # a blocking call: the signal sent again must wake it
    print("lost")
except Interrupted as interrupt:
    print(f"raised {interrupt.args[0]} after {time.monotonic() - started:.1f} s")
"""


def assert_sent_again_quietly(result: subprocess.CompletedProcess[str]) -> None:
    """The script's swallowed SIGINT was raised again, woke its 30 s sleep, and nothing
    was printed about it (no "Exception ignored in ...", no traceback)."""
    assert result.stdout.startswith(f"raised {int(signal.SIGINT)} after"), result
    assert float(result.stdout.split()[-2]) < 20, result.stdout  # not the 30 s sleep
    assert result.stderr == "", result.stderr


def test_a_signal_a_finaliser_swallowed_is_sent_again_and_wakes_a_blocking_call() -> None:
    result = subprocess.run(
        [sys.executable, "-c", RESENT], capture_output=True, text=True, timeout=120, check=False
    )

    assert_sent_again_quietly(result)


#: The signal arrives while psycopg's C notice receiver runs a Python notice handler (a
#: NOTICE during a migration: SQLAlchemy logs each one). The receiver cannot pass the
#: exception on: it prints its traceback through ``sys.excepthook``, then hands it to the
#: unraisable hook. Seen in CI's signal trials on PostgreSQL, as a traceback before the
#: one line.
IN_A_DRIVER_CALLBACK = """
import os, signal, sys, time
import psycopg
from flowdb import interrupts
from flowdb.errors import Interrupted

interrupts.install()


def receive_signal(diagnostic):
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # the handler runs in here
        pass


started = time.monotonic()
with psycopg.connect(sys.argv[1], autocommit=True) as connection:
    connection.add_notice_handler(receive_signal)
    try:
        connection.execute("DO $$ BEGIN RAISE NOTICE 'a notice'; END $$")
        time.sleep(30)  # the signal sent again must wake it
        print("lost")
    except Interrupted as interrupt:
        print(f"raised {interrupt.args[0]} after {time.monotonic() - started:.1f} s")
"""


def test_a_signal_a_driver_callback_swallowed_is_sent_again_without_a_traceback(
    postgres_url: str,
) -> None:
    import sqlalchemy as sa

    conninfo = sa.make_url(postgres_url).set(drivername="postgresql")
    result = subprocess.run(
        [sys.executable, "-c", IN_A_DRIVER_CALLBACK, conninfo.render_as_string(False)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert_sent_again_quietly(result)


#: A process whose outcome is said (``close``) while a thread started earlier still runs
#: (as Rich's live display's refresh thread outlives the display), then what the
#: interpreter's shutdown does to signal handlers (CPython's ``_PySignal_Fini``: a signal
#: with a Python handler gets the default one back; an ignored one stays ignored), then
#: the signal. A blocked mask covered only the main thread: the thread took the signal
#: and the process died of it, after "Upgrade finished" (seen on MariaDB in CI).
AFTER_THE_OUTCOME = """
import os, signal, sys, threading, time
from flowdb import interrupts

interrupts.install()
started = threading.Event()

def lingering():
    started.set()
    while True:
        time.sleep(0.01)

threading.Thread(target=lingering, daemon=True).start()
started.wait()
interrupts.close()
print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)
for signum in (signal.SIGINT, signal.SIGTERM):  # as the shutdown does
    if signal.getsignal(signum) not in (signal.SIG_IGN, signal.SIG_DFL):
        signal.signal(signum, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.3)
print("exited as decided", flush=True)
"""


def test_a_signal_after_the_outcome_is_said_cannot_kill_the_process_on_its_way_out() -> None:
    result = subprocess.run(
        [sys.executable, "-c", AFTER_THE_OUTCOME],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result
    assert result.stdout.split() == ["True", "exited", "as", "decided"], result.stdout


def test_the_signal_exit_codes_are_the_exit_code_table_s() -> None:
    from flowdb.errors import ExitCode
    from flowdb.interrupts import SIGNALS

    assert SIGNALS == {
        signal.SIGINT: ("Interrupted", ExitCode.INTERRUPTED),
        signal.SIGTERM: ("Terminated", ExitCode.TERMINATED),
    }


LIBRARY_LOGS = """
import logging
from flowdb.cli import root
from flowdb.errors import Interrupted

root._quiet_interrupts_in_library_logs()
pool = logging.getLogger("sqlalchemy.pool.impl.NullPool")
for error in (Interrupted(2), ValueError("a driver failed")):
    try:
        raise error
    except BaseException:
        pool.error("Exception closing connection %r", type(error).__name__, exc_info=True)
try:  # a rollback that fails on the connection the signal left busy
    try:
        raise Interrupted(15)
    except Interrupted:
        raise OSError("another command is already in progress")
except OSError:
    pool.error("Exception during reset or similar", exc_info=True)
"""


def test_a_library_log_of_a_signal_is_dropped_and_other_errors_kept() -> None:
    """SQLAlchemy's pool logs a signal raised while it closes a connection, with its
    traceback, before the signal reaches the edge's one line: that record is dropped,
    and so is one of an error raised while the signal was handled (a failed reset)."""
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_LOGS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "'Interrupted'" not in result.stderr
    assert "Exception during reset" not in result.stderr  # raised while handling one
    assert "Exception closing connection 'ValueError'" in result.stderr
    assert "ValueError: a driver failed" in result.stderr
