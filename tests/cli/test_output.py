"""How the CLI reports migrations while they run."""

from __future__ import annotations

import logging

import pytest

from flowdb.cli.output import migration_report
from flowdb.database.events import Progress, StepDone


def test_progress_of_a_long_data_migration_is_printed_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("flowdb.migrations")
    with migration_report("Upgrading"):
        text = "flow_run: 100,000 rows so far (batch 1)"
        logger.info(text, extra={"event": Progress(text)})
        step = StepDone(direction="upgrade", revision="abc", title="T [b]", elapsed=0.5)
        logger.info("step", extra={"event": step})
    err = capsys.readouterr().err
    assert "flow_run: 100,000 rows so far (batch 1)" in err
    assert "↑ abc  T [b]  0.50 s" in err  # titles are printed literally, not as markup
