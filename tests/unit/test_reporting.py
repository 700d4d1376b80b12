"""Reports and history from a journal built by hand: what they hold, what they escape and
redact, where they are written, and that a report failing to write is only a warning."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator import config
from orchestrator.engine import machine
from orchestrator.engine.facts import BACKUP, ROLLBACK
from orchestrator.engine.journal import Journal
from orchestrator.engine.rows import PhaseStatus
from orchestrator.errors import UsageError
from orchestrator.reporting import as_html, as_markdown, record, status
from tests.support.settings import make_settings

HOSTILE = '<script>alert("x")</script> | and postgresql://app:s3cret-pw@db/shop'
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return make_settings(tmp_path)


@pytest.fixture
def journal(settings: config.Settings) -> Journal:
    return Journal.open(settings.state_dir)


def play(journal: Journal, run_id: str, *, fail_at: str | None = None,
         stop_at: str | None = None) -> None:
    """A run through the machine: every phase succeeds, except ``fail_at`` (then the
    rollback branch) or ``stop_at`` (left running, interrupted)."""
    journal.create_run(run_id, [str(p) for p in machine.phases()], {
        "user": "alice", "host": "ops-1", "git_commit": "abc1234", "target": "db:5432/shop",
        "staging": "db:5432/shop_staging"})
    route = [*machine.FORWARD[:machine.FORWARD.index(fail_at) + 1], *machine.RECOVERY] \
        if fail_at else machine.FORWARD
    current = machine.build(route[0])
    for name in route:
        journal.start_phase(run_id, name, time.time() + 60, 60.0)
        if name == stop_at:
            journal.set_interrupted(run_id)
            return
        trigger = "failed" if name == fail_at else "succeeded"
        journal.conclude_phase(run_id, name, "failed" if name == fail_at else "succeeded",
                               HOSTILE if name == fail_at else None, trigger=trigger,
                               state=current.fire(trigger))
    journal.skip_pending(run_id)
    journal.finish(run_id, 1 if fail_at else 0)


def put_facts(journal: Journal, run_id: str) -> None:
    journal.put(run_id, BACKUP, {
        "path": "/srv/backups/r1", "size_bytes": 123456, "manifest_sha256": "ab" * 32,
        "verified": True, "verification": "restore", "standby": "shop_window_r1",
        "tables": {"public.orders": {"rows": 2000, "checksum": "42"}}, "compress": "lz4"})
    for at, connections in enumerate((3, 9, 4)):
        journal.add_sample(run_id, "migrate", 1_800_000_000.0 + at, {
            "connections": connections, "active": 1, "waiting": at, "longest_s": 0.5,
            "by_state": {}, "blocked": [], "ungranted_locks": 0})


def audit(settings: config.Settings, *events: dict[str, Any]) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "audit.jsonl").open("a") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")
        out.write('{"torn": ')  # a crash mid-line


def check(run_id: str, name: str, passed: bool, phase: str = "post_check") -> dict[str, Any]:
    return {"event": "check_passed" if passed else "check_failed", "run_id": run_id,
            "phase": phase, "check": name, "kind": "sql", "detail": f"{name} said so",
            "duration_s": 0.25, "at": "2026-11-30T08:59:43.509+00:00"}


def test_markdown_holds_phases_backup_checks_state_and_exit_code(
        journal: Journal, settings: config.Settings) -> None:
    play(journal, "r1")
    put_facts(journal, "r1")
    audit(settings, check("r1", "orders-intact", True), check("other", "elsewhere", False),
          {"event": "window_started", "run_id": "r1", "user": "alice", "host": "ops-1",
           "cli_command": "run", "state": "preflight", "at": "2026-11-30T08:59:39.000+00:00"})

    text = as_markdown.render(record.gather(journal, journal.run("r1"), settings))

    assert text.startswith("# window window r1: completed\n")
    assert "| **exit code** | 0 (completed) |" in text
    assert "| **confirmed by** | alice on ops-1 at " in text
    assert "| **git commit** | abc1234 |" in text
    assert "| migrate | succeeded |" in text
    assert "| rollback | skipped | - | - |" in text
    # The expectation is the runbook's (no rehearsal), the timeout the phase's own.
    assert "| backup | succeeded |" in text and "| 5m00s | 1m00s |" in text
    assert "| post_check | orders-intact | sql | passed | orders-intact said so | 0.2s |" in text
    assert "elsewhere" not in text, "another run's check"
    assert "| **size** | 123,456 bytes (120.6 KiB) |" in text
    assert f"| **checksum** | sha256 {'ab' * 32}" in text
    assert "| **verified** | yes: restored into a standby copy" in text
    assert "| public.orders | 2,000 | 42 |" in text
    assert "| migrate | 3 | 9 | 1 | 2 | 0.5s |" in text
    assert "| window_started | alice@ops-1 | window run | preflight |" in text


def test_html_is_self_contained_escaped_and_redacted(journal: Journal,
                                                     settings: config.Settings) -> None:
    play(journal, "r1", fail_at="migrate")
    journal.put("r1", ROLLBACK, {"method": "swap", "duration_s": 1.5, "write_gap": {},
                                   "retained_database": "shop_failed_r1",
                                   "instructions": "psql postgresql://app:s3cret-pw@db/shop"})

    page = as_html.render(record.gather(journal, journal.run("r1"), settings))

    assert "s3cret-pw" not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    for fetch in ("src=", "href=", "<link", "@import", "url("):
        assert fetch not in page
    assert "1 (failed and rolled back: production holds the backup again)" in page


def test_markdown_cells_keep_to_one_line_and_one_cell(journal: Journal,
                                                      settings: config.Settings) -> None:
    play(journal, "r1", fail_at="post_check")

    text = as_markdown.render(record.gather(journal, journal.run("r1"), settings))

    row = next(line for line in text.splitlines() if line.startswith("| post_check |"))
    assert row.endswith(' | \\<script>alert("x")\\</script> \\| and postgresql://app:***@db/shop |')
    assert len(re.split(r"(?<!\\)\|", row)) == 7 + 2  # seven cells between two edges


def test_timeline_draws_each_phase_against_its_timeout_and_expectation(
        journal: Journal, settings: config.Settings) -> None:
    play(journal, "r1", fail_at="migrate")
    page = as_html.render(record.gather(journal, journal.run("r1"), settings))

    timeline = page[page.index('<svg id="timeline"'):page.index("</svg>") + len("</svg>")]
    svg = ET.fromstring(timeline)  # noqa: S314 - the page this test just rendered

    labels = [t.text for t in svg.iter(f"{SVG}text")]
    for phase in machine.PHASES:
        assert phase in labels
    bars = {r.findtext(f"{SVG}title", "").split()[0]: r.get("fill")
            for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"}
    assert set(bars) == {"preflight", "staging_dry_run", "backup", "banner_on", "migrate",
                         "rollback", "rollback_banner_off"}, "skipped phases have no bar"
    assert bars["migrate"] == as_html.BAR_COLOURS["failed"]
    assert bars["backup"] == as_html.BAR_COLOURS["succeeded"]
    timeouts = [r for r in svg.iter(f"{SVG}rect") if r.findtext(f"{SVG}title", "")
                .startswith("timeout")]
    assert len(timeouts) == 7
    expected = [p.findtext(f"{SVG}title") for p in svg.iter(f"{SVG}path")
                if p.findtext(f"{SVG}title")]
    assert "expected 5m00s" in expected, "the backup's runbook figure"


def test_an_interrupted_run_reports_exit_5_and_its_interrupted_phase(
        journal: Journal, settings: config.Settings) -> None:
    play(journal, "r1", stop_at="backup")

    text = as_markdown.render(record.gather(journal, journal.run("r1"), settings))

    assert "| **exit code** | 5 (interrupted: `window resume` continues) |" in text
    assert "| backup | interrupted |" in text


def test_reports_land_in_the_state_folder_and_per_run(journal: Journal,
                                                      settings: config.Settings) -> None:
    play(journal, "r1")
    time.sleep(0.01)
    play(journal, "r2", fail_at="migrate")

    newest = record.write(journal, journal.run("r2"), settings)
    older = record.write(journal, journal.run("r1"), settings, ("md",))

    folder = settings.state_dir
    assert set(newest) == {folder / "report.md", folder / "report.html",
                           folder / "reports" / "r2.md", folder / "reports" / "r2.html"}
    assert older == [folder / "reports" / "r1.md"], "report.md stays the newest run's"
    assert "r2: rolled_back" in (folder / "report.md").read_text()
    assert "r1: completed" in (folder / "reports" / "r1.md").read_text()
    assert not list(folder.glob("**/*.tmp"))


def test_a_report_that_cannot_be_written_is_only_a_warning(journal: Journal,
                                                           settings: config.Settings) -> None:
    play(journal, "r1")
    (settings.state_dir / "reports").write_text("a file where the folder should be")

    with capture_logs() as logs:
        record.write_after_window(journal, "r1", settings)

    assert [log["event"] for log in logs] == ["report_not_written"]
    assert logs[0]["log_level"] == "warning"


def test_history_lists_runs_newest_first_with_outcomes_and_durations(
        journal: Journal, settings: config.Settings) -> None:
    play(journal, "r1")
    time.sleep(0.01)
    play(journal, "r2", fail_at="migrate")
    time.sleep(0.01)
    play(journal, "r3", stop_at="backup")

    lines = record.history(journal, settings.state_dir, limit=10).splitlines()

    assert [line.split()[0] for line in lines[1:]] == ["r3", "r2", "r1"]
    assert lines[1].split()[3:6] == ["interrupted", "(backup)", "-"]
    assert lines[2].split()[3:5] == ["rolled_back", "1"]
    assert "migrate 0.0s FAILED" in lines[2] and "rollback_banner_off 0.0s" in lines[2]
    assert lines[3].split()[3:5] == ["completed", "0"]
    assert "post_check" in lines[3] and "rollback" not in lines[3]
    assert len(record.history(journal, settings.state_dir, limit=1).splitlines()) == 2


def test_unknown_runs_and_empty_journals_are_usage_errors(journal: Journal,
                                                          settings: config.Settings) -> None:
    with pytest.raises(UsageError, match="no window has run"):
        record.history(journal, settings.state_dir, limit=5)
    with pytest.raises(UsageError, match="no window has run"):
        record.find_run(journal, None, settings.state_dir)
    play(journal, "r1")
    with pytest.raises(UsageError, match="`window history` lists them"):
        record.find_run(journal, "r9", settings.state_dir)
    assert record.find_run(journal, None, settings.state_dir).run_id == "r1"


def test_an_operators_abort_is_listed_as_aborted_not_failed(journal: Journal,
                                                           settings: config.Settings) -> None:
    journal.create_run("r1", [str(p) for p in machine.phases()], {"target": "db:5432/shop"})
    journal.start_phase("r1", "preflight", time.time() + 60, 60.0)
    journal.conclude_phase("r1", "preflight", PhaseStatus.ABORTED, "aborted by the operator",
                           trigger="abort", state="aborted")
    journal.finish("r1", 3)

    listed = record.history(journal, settings.state_dir, 10)

    assert "preflight" in listed and " ABORTED" in listed and "FAILED" not in listed


def test_an_ended_window_shows_no_eta_and_no_driving_pid(journal: Journal,
                                                         settings: config.Settings) -> None:
    play(journal, "r1")
    run = journal.run("r1")

    shown = status.table(status.status(journal, run, settings, alive=True))

    assert "eta" not in shown and "driven by pid" not in shown
    assert status.status(journal, run, settings)["eta"] is None


def test_views_the_restore_recomputed_are_shown_by_status_and_the_report(
        journal: Journal, settings: config.Settings) -> None:
    play(journal, "r1", fail_at="migrate")
    put_facts(journal, "r1")
    backup = journal.get("r1", BACKUP) or {}
    journal.put("r1", BACKUP, {
        **backup, "materialized_views": {"public.order_ids": {"rows": 2000, "checksum": "7"}},
        "recomputed_views": [{"view": "public.order_ids", "rows_at_backup": 2000,
                              "rows_in_copy": 2005}]})
    shown = "public.order_ids (2000 rows at the backup, 2005 rows in the copy)"

    table = status.table(status.status(journal, journal.run("r1"), settings))
    text = as_markdown.render(record.gather(journal, journal.run("r1"), settings))

    assert f"recomputed by the restore (so after a rollback): {shown}" in table
    assert f"| **recomputed by the restore** | {shown} |" in text
    assert "| public.order_ids (materialized view) | 2,000 | 7 |" in text
