"""The sampler's promises that need no server: it never fails or holds up a phase, and the
journal keeps its samples in order with outside text redacted."""

from __future__ import annotations

import time
from pathlib import Path

from structlog.testing import capture_logs

from orchestrator.engine import monitor
from orchestrator.engine.context import Context
from orchestrator.engine.journal import Journal
from orchestrator.postgres import pg
from tests.support.settings import make_settings

NOBODY_LISTENS = "postgresql://u:s3cret-pw@127.0.0.1:1/prod"


def context(tmp_path: Path, interval: str = "0.5s") -> Context:
    settings = make_settings(tmp_path, monitor={"interval": interval})
    journal = Journal.open(tmp_path / ".window")
    base = Context(settings=settings, journal=journal, run_id="r1",
                   target=pg.Db.from_url(NOBODY_LISTENS), staging=pg.Db.from_url(NOBODY_LISTENS))
    return base.for_phase("migrate", time.time() + 60, lambda: None)


def test_an_unreachable_server_is_one_warning_and_no_delay(tmp_path: Path) -> None:
    with capture_logs() as logs:
        ctx = context(tmp_path)
        started = time.monotonic()
        with monitor.sampling(ctx):
            time.sleep(0.3)  # several ticks, each failing to connect
        took = time.monotonic() - started

    taken = ctx.journal.samples("r1")
    ctx.journal.close()
    assert took < 1.0
    warnings = [e for e in logs if e["event"] == "monitor_failed"]
    assert len(warnings) == 1, logs
    assert "127.0.0.1:1/postgres" in warnings[0]["db"]
    assert taken == []


def test_samples_come_back_in_order_with_outside_text_redacted(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / ".window")
    for at in (2.0, 1.0, 3.0):
        journal.add_sample("r1", "migrate", at, {"connections": int(at)})
    journal.add_sample("r2", "rollback", 0.5, {"connections": 9})
    leaky = {"pid": 7, "blocked_by": [6], "application_name": "cron postgresql://u:hunter2@h/db"}
    journal.add_sample("r1", "migrate", 4.0, {"connections": 4, "blocked": [leaky]})

    got = journal.samples("r1")
    journal.close()

    assert [s["at"] for s in got] == [1.0, 2.0, 3.0, 4.0]
    assert got[0] == {"at": 1.0, "phase": "migrate", "connections": 1}
    assert "hunter2" not in str(got)
    assert got[-1]["blocked"][0]["blocked_by"] == [6]


def sample(connections: int, active: int, longest_s: float,
           blocked_by: list[int] | None = None) -> dict[str, object]:
    blocked = [{"pid": 9, "blocked_by": blocked_by}] if blocked_by else []
    return {"connections": connections, "active": active, "waiting": len(blocked),
            "longest_s": longest_s, "blocked": blocked}


def test_a_monitor_line_is_shown_when_the_picture_changes_not_every_tick(tmp_path: Path
                                                                        ) -> None:
    ctx = context(tmp_path)
    sampler = monitor.Sampler(ctx)
    with capture_logs() as logs:
        for taken in (sample(3, 1, 0.5), sample(3, 1, 2.5), sample(3, 1, 4.5),  # one line
                      sample(4, 2, 6.5), sample(4, 2, 8.5),  # a new session: one more
                      sample(4, 2, 9.0, blocked_by=[7])):  # someone waits: one more
            sampler._show(taken)
    ctx.journal.close()

    shown = [(e["connections"], e["active"], e.get("blocked_by")) for e in logs
             if e["event"] == "monitor"]
    assert shown == [(3, 1, None), (4, 2, None), (4, 2, [7])]
