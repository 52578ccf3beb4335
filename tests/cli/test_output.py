"""How the CLI reports migrations while they run."""

from __future__ import annotations

import logging

import pytest

from flowdb.cli.output import migration_report


def test_progress_of_a_long_data_migration_is_printed_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("flowdb.migrations")
    with migration_report("Upgrading"):
        logger.info("flow_run: 100,000 rows so far (batch 1)", extra={"progress": True})
        logger.info(
            "step",
            extra={"revision": "abc", "direction": "upgrade", "title": "T [b]", "elapsed": 0.5},
        )
    err = capsys.readouterr().err
    assert "flow_run: 100,000 rows so far (batch 1)" in err
    assert "↑ abc  T [b]  0.50 s" in err  # titles are printed literally, not as markup
