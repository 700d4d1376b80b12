"""The live panel, drawn into a string as a terminal would show it, from a journal built by
hand; and the console lines off a terminal: plain text, or JSON with --json-logs."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from orchestrator import config, log
from orchestrator.engine import machine
from orchestrator.engine.journal import Journal
from orchestrator.engine.rows import PhaseStatus
from orchestrator.reporting import live, panel
from tests.support.settings import make_settings
from tests.support.waiting import wait_until

RUN = "20260101_120000_abcd"


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return make_settings(tmp_path)


@pytest.fixture
def journal(settings: config.Settings) -> Journal:
    made = Journal.open(settings.state_dir)
    made.create_run(RUN, [str(p) for p in machine.phases()], {"target": "db/shop"})
    made.start_phase(RUN, "preflight", time.time() + 120, 120.0)
    made.finish_phase(RUN, "preflight", "succeeded")
    made.start_phase(RUN, "staging_dry_run", time.time() + 900, 900.0)
    return made


def screen(journal: Journal, settings: config.Settings, after: float) -> str:
    out = io.StringIO()
    terminal = panel.Console(file=out, force_terminal=True, width=120, color_system=None)
    terminal.print(panel.render(journal, RUN, settings, now=time.time() + after))
    return out.getvalue()


def test_panel_shows_every_phase_with_a_bar_and_the_eta(journal: Journal,
                                                       settings: config.Settings) -> None:
    shown = screen(journal, settings, after=60)
    for phase in ("preflight", "staging_dry_run", "backup", "migrate", "banner_off"):
        assert phase in shown
    assert "━" in shown  # the elapsed-against-timeout bar
    assert "running" in shown and "succeeded" in shown and "pending" in shown
    assert "ETA " in shown and "point of no return" in shown
    assert "OVERRUN" not in shown  # one minute into a rehearsal expected to take ten


def test_a_phase_past_its_expected_duration_is_flagged(journal: Journal,
                                                       settings: config.Settings) -> None:
    shown = screen(journal, settings, after=700)  # the timeline expects 600s
    line = next(row for row in shown.splitlines() if "staging_dry_run" in row)
    assert "OVERRUN" in line
    assert "11m40s" in line


def test_the_latest_monitor_sample_is_shown(journal: Journal,
                                            settings: config.Settings) -> None:
    sample = {"connections": 7, "active": 3, "waiting": 1, "longest_s": 4.2}
    journal.add_sample(RUN, "migrate", time.time(), sample)
    assert "7 connections, 3 active, 1 waiting, longest statement 4.2s" \
        in screen(journal, settings, after=1)


def test_no_panel_off_a_terminal(journal: Journal, settings: config.Settings,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with live.live_view(journal, RUN, settings):
        print("a line")
    assert capsys.readouterr().out == "a line\n"


def test_panel_keeps_log_lines_above_itself(journal: Journal,
                                            settings: config.Settings) -> None:
    out = io.StringIO()
    terminal = panel.Console(file=out, force_terminal=True, width=120, color_system=None)
    with live.live_view(journal, RUN, settings, console=terminal):
        print("phase_started phase=backup")
        wait_until(lambda: "staging_dry_run" in out.getvalue(), "the panel drawn", seconds=30)
    shown = out.getvalue()
    assert "phase_started phase=backup" in shown
    assert "staging_dry_run" in shown


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    written = io.StringIO()
    yield written
    structlog.reset_defaults()  # the next test must not log into this one's string
    log.console.json_lines = False


def test_plain_lines_off_a_terminal(out: io.StringIO) -> None:
    log.configure(out)
    structlog.get_logger().info("phase_started", phase="migrate", timeout_s=300)
    line = out.getvalue()
    assert line.rstrip().endswith("phase=migrate timeout_s=300")
    assert line[:9].count(":") == 2 and line[8:9] == " "  # HH:MM:SS first
    assert "\x1b[" not in line


def test_json_lines_are_redacted_audit_events(out: io.StringIO) -> None:
    log.configure(out, json_lines=True)
    with structlog.contextvars.bound_contextvars(run_id=RUN):
        structlog.get_logger().info("phase_started", url="postgresql://app:s3cret-pw@db/shop")
    event = json.loads(out.getvalue())
    assert event["event"] == "phase_started"
    assert event["run_id"] == RUN and event["level"] == "info" and event["at"]
    assert "s3cret-pw" not in out.getvalue()
    assert event["url"] == "postgresql://app:***@db/shop"
    assert not log.panel_wanted()  # JSON lines are for programs: no panel over them


def test_the_last_frame_shows_how_the_window_ended(journal: Journal,
                                                  settings: config.Settings) -> None:
    out = io.StringIO()
    terminal = panel.Console(file=out, force_terminal=True, width=120, color_system=None)
    with live.live_view(journal, RUN, settings, console=terminal):
        wait_until(lambda: "staging_dry_run" in out.getvalue(), "the panel drawn", seconds=30)
        journal.conclude_phase(RUN, "staging_dry_run", PhaseStatus.FAILED, "staging broke",
                               trigger="failed", state="aborted")
    last = out.getvalue().rsplit(f"window {RUN}:", 1)[1]
    assert last.split("\n", 1)[0].strip() == "aborted"
    assert "running" not in last, "no phase shown running after the window ended"
