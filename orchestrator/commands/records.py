"""``window report`` and ``window history``: what past windows left, read from the journal."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import Settings
from orchestrator.engine import holding
from orchestrator.reporting.record import find_run, history, write


def write_reports(settings: Settings, run_id: str | None, formats: tuple[str, ...]
                  ) -> list[Path]:
    """``window report``: a run's report.md / report.html written again; the paths."""
    journal = holding.read(settings)
    return write(journal, find_run(journal, run_id, settings.state_dir), settings, formats)


def show_history(settings: Settings, limit: int) -> str:
    journal = holding.read(settings)
    return history(journal, settings.state_dir, limit)
