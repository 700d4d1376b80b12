"""The live panel, drawn with rich: every phase with its elapsed time against its timeout,
the window's ETA and the latest monitor figures, redrawn from the journal while a window runs
on a terminal.

It only reads the journal, on its own thread with its own connection, so a panel that fails
to draw cannot change how the window goes. Log lines and prints are routed above the panel
(rich's stdout / stderr proxies) so they do not tear it. Off a terminal, under ``NO_COLOR``
or with ``--json-logs`` it is never drawn (``reporting.live`` decides, and imports this
module, and rich with it, only when it is).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.config import Settings
from orchestrator.engine import eta
from orchestrator.engine.facts import REHEARSAL
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import FORWARD
from orchestrator.engine.rows import PhaseRow, PhaseStatus

REFRESH_SECONDS = 0.25
JOIN_SECONDS = 2.0
BAR_WIDTH = 24
STYLES = {PhaseStatus.RUNNING: "bold cyan", PhaseStatus.SUCCEEDED: "green",
          PhaseStatus.FAILED: "bold red", PhaseStatus.TIMED_OUT: "bold red",
          PhaseStatus.INTERRUPTED: "yellow", PhaseStatus.ABORTED: "yellow",
          PhaseStatus.SKIPPED: "dim"}


def _elapsed(row: PhaseRow, now: float) -> float | None:
    if row.started_at is None:
        return None
    return (row.finished_at if row.finished_at and row.status != PhaseStatus.RUNNING else now) \
        - row.started_at


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")  # the clock of the person watching


def _phases(rows: list[PhaseRow], expected: dict[str, float], settings: Settings,
            now: float) -> Table:
    grid = Table(box=None, pad_edge=False)
    for column in ("phase", "status", "elapsed", "of timeout", "timeout", "expected"):
        grid.add_column(column, justify="right" if column in ("elapsed", "timeout",
                                                              "expected") else "left")
    for row in rows:
        took = _elapsed(row, now)
        limit = row.timeout_s or settings.timeout(row.name)
        overrun = row.status == PhaseStatus.RUNNING and took is not None \
            and row.name in expected and took > expected[row.name]
        status = Text(row.status, style=STYLES.get(row.status, ""))
        if overrun:
            status.append(" OVERRUN", style="bold yellow reverse")
        grid.add_row(row.name, status, eta.shown(took) if took is not None else "-",
                     ProgressBar(total=limit, completed=min(took or 0.0, limit),
                                 width=BAR_WIDTH),
                     eta.shown(limit),
                     eta.shown(expected[row.name]) if row.name in expected else "-")
    return grid


def _eta_line(journal: Journal, run_id: str, settings: Settings, rows: list[PhaseRow],
              now: float) -> Text:
    actual = {row.name: row.finished_at - row.started_at for row in rows
              if row.name in FORWARD and row.status == PhaseStatus.SUCCEEDED and row.started_at
              and row.finished_at}
    estimate = eta.estimate(settings, journal.get(run_id, REHEARSAL), actual)
    started = journal.run(run_id).created_at
    ends = started + estimate.expected_s
    return Text(f"ETA {_clock(ends)} ({eta.shown(max(0.0, ends - now))} left, from the"
                f" {estimate.source}); point of no return"
                f" {_clock(started + estimate.point_of_no_return_s)}")


def _monitor_line(journal: Journal, run_id: str) -> Text | None:
    samples = journal.samples(run_id)
    if not samples:
        return None
    last = samples[-1]
    return Text(f"monitor ({last['phase']}, {_clock(last['at'])}): {last['connections']}"
                f" connections, {last['active']} active, {last['waiting']} waiting,"
                f" longest statement {eta.shown(last['longest_s'])}")


def render(journal: Journal, run_id: str, settings: Settings,
           now: float | None = None) -> RenderableType:
    """The panel as it stands in the journal at ``now``."""
    now = time.time() if now is None else now
    rows = journal.phases(run_id)
    # What each phase was expected to take (not what the finished ones took): the overrun mark.
    expected = eta.estimate(settings, journal.get(run_id, REHEARSAL)).phases
    parts: list[RenderableType] = [
        Text(f"window {run_id}: {journal.run(run_id).state}", style="bold"),
        _phases(rows, expected, settings, now),
        _eta_line(journal, run_id, settings, rows, now)]
    if monitor := _monitor_line(journal, run_id):
        parts.append(monitor)
    return Group(*parts)


def _refresh(live: Live, path: Path, run_id: str, settings: Settings,
             stop: threading.Event) -> None:
    # SQLite connections stay in the thread that opened them: this one is the panel's.
    journal = Journal(path)

    def draw() -> None:
        with suppress(Exception):  # a panel that cannot draw must not hurt the window
            live.update(render(journal, run_id, settings), refresh=True)

    try:
        draw()
        while not stop.wait(REFRESH_SECONDS):
            draw()
        draw()  # the last frame shows how the window ended, not the phase it was in
    finally:
        journal.close()


@contextmanager
def shown(journal: Journal, run_id: str, settings: Settings,
          console: Console | None = None) -> Iterator[None]:
    """The panel drawn for as long as the block runs."""
    stop = threading.Event()
    with Live(console=console or Console(stderr=True), auto_refresh=False,
              redirect_stdout=True, redirect_stderr=True) as live:
        thread = threading.Thread(target=_refresh, name="live-view", daemon=True,
                                  args=(live, journal.path, run_id, settings, stop))
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(JOIN_SECONDS)
