"""The live panel's switch: drawn (``reporting.panel``, with rich) only where a person
watches a terminal that may have colour; off a terminal, under ``NO_COLOR`` or with
``--json-logs`` the plain log lines are the view, and rich is never imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator import log

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.config import Settings
    from orchestrator.engine.journal import Journal


@contextmanager
def live_view(journal: Journal, run_id: str, settings: Settings,
              console: Console | None = None) -> Iterator[None]:
    """Show the panel for as long as the block runs, where a person watches a terminal."""
    if console is None and not log.panel_wanted():
        yield
        return
    from orchestrator.reporting import panel  # rich: only for a panel

    with panel.shown(journal, run_id, settings, console):
        yield
