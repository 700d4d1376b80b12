"""More of what an on-call engineer sees: the audit trail, the status table, SIGTERM, an early
abort, unreachable databases, and banners that will not behave."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from urllib.parse import quote

from orchestrator.commands import demo
from orchestrator.postgres.cluster import free_port
from tests.support.processes import pid_alive
from tests.support.shop import SLOW_ON_PRODUCTION, Shop


def audit_events(shop: Shop) -> list[dict[str, object]]:
    lines = (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_audit_trail_says_who_where_what_and_how_long(shop: Shop) -> None:
    refused = shop.window("run", "--confirm", "nope")
    done = shop.run_window()
    assert (refused.returncode, done.returncode) == (3, 0), done.stderr

    events = audit_events(shop)
    names = [e["event"] for e in events]
    assert names[0] == "command_refused"
    assert "phrase" in str(events[0]["reason"])
    assert names.count("phase_succeeded") == 7
    assert names[-1] == "window_finished"
    run_id = shop.status()["run_id"]
    for event in events[1:]:
        assert event["run_id"] == run_id
        assert event["user"] and event["host"] and event["at"]
        assert event["cli_command"] == "run"
    finished = events[-1]
    assert finished["state"] == "completed"
    assert finished["exit_code"] == 0
    assert float(finished["duration_s"]) > 0  # type: ignore[arg-type]
    migrate = next(e for e in events if e["event"] == "phase_succeeded"
                   and e["phase"] == "migrate")
    assert float(migrate["duration_s"]) > 0  # type: ignore[arg-type]


def test_json_logs_print_the_audit_events_on_stderr(shop: Shop) -> None:
    done = shop.run_window("--json-logs")
    assert done.returncode == 0, done.stderr

    lines = done.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # every line, or this fails
    assert all(isinstance(e, dict) and e["event"] for e in events)
    names = [e["event"] for e in events]
    assert names.count("phase_started") == 7
    assert names[-1] == "window_finished"
    run_id = shop.status()["run_id"]
    assert all(e["run_id"] == run_id for e in events[1:])
    for secret in (shop.cluster.password, demo.APP_PASSWORD,
                   quote(shop.cluster.password, safe=""), quote(demo.APP_PASSWORD, safe="")):
        assert secret not in done.stderr


def test_on_a_terminal_the_live_panel_shows_the_phases(shop: Shop) -> None:
    primary, secondary = pty.openpty()
    env = {k: v for k, v in shop.env.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    window = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "--confirm",
                               demo.PHRASE], cwd=shop.folder, env=env, stdin=subprocess.DEVNULL,
                              stdout=secondary, stderr=secondary)
    os.close(secondary)
    screen = bytearray()
    with contextlib.suppress(OSError):  # EIO once the window closed the terminal
        while chunk := os.read(primary, 65536):
            screen += chunk
    os.close(primary)
    assert window.wait(timeout=120) == 0, screen.decode(errors="replace")[-3000:]

    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "of timeout" in shown and "ETA " in shown  # the panel's header and its ETA line
    assert "━" in shown  # a phase's bar
    assert "phase_started" in shown  # log lines still come through, above the panel
    assert "Traceback" not in shown


def test_status_table_is_readable(shop: Shop) -> None:
    assert shop.run_window().returncode == 0
    table = shop.window("status").stdout
    assert f"window {shop.status()['run_id']}: completed" in table
    for phase in ("preflight", "staging_dry_run", "backup", "banner_on", "migrate",
                  "post_check", "banner_off"):
        assert f"  {phase} " in table
    assert "3 tables, 8200 rows" in table


def test_sigterm_during_migrate_stops_the_child_and_resume_completes(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    window, sleeper = shop.start_until_sleeping()

    window.send_signal(signal.SIGTERM)

    assert window.wait(timeout=30) == 5, shop.background_output()
    assert not pid_alive(sleeper)
    assert shop.phase("migrate")["status"] == "interrupted"
    assert shop.status()["interrupted"] is True
    assert shop.banner_log() == ["on"]
    resumed = shop.window("resume")
    assert resumed.returncode == 0, resumed.stderr
    assert shop.banner_log() == ["on", "off"]


def test_abort_before_the_banner_just_stops(shop: Shop) -> None:
    shop.configure(migrate='if [ "$WINDOW_PHASE" = staging_dry_run ]; then sleep 60 &'
                           ' echo $! > sleeper.pid; wait; fi')
    before = shop.fingerprint()
    window, _sleeper = shop.start_until_sleeping()

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stderr
    assert window.wait(timeout=30) == 3
    assert shop.status()["state"] == "aborted"
    assert shop.banner_log() == []
    assert shop.fingerprint() == before
    assert shop.databases(f"{shop.prod_db}_failed_%") == []


def test_resume_and_abort_with_nothing_unfinished(shop: Shop) -> None:
    resumed = shop.window("resume")
    assert resumed.returncode == 2
    assert "nothing to resume" in resumed.stderr
    aborted = shop.window("abort", "--confirm", demo.PHRASE)
    assert aborted.returncode == 0
    assert "nothing to roll back" in aborted.stdout


def test_unreachable_production_fails_within_its_bound(shop: Shop) -> None:
    shop.configure(timeouts="")
    text = shop.config.read_text().replace('url_env = "DATABASE_URL"\n',
                                           'url_env = "DATABASE_URL"\nconnect_timeout = "2s"\n', 1)
    shop.config.write_text(text)
    shop.env["DATABASE_URL"] = f"postgresql://app:pw@127.0.0.1:{free_port()}/shop"
    started = time.monotonic()

    done = shop.run_window()

    # Refused before the window starts, as plan refuses it: the same mistake, the same code.
    assert done.returncode == shop.window("plan").returncode == 2, done.stderr
    assert time.monotonic() - started < 20
    assert "cannot reach" in done.stderr.strip().splitlines()[-1]


def test_unreachable_staging_is_refused_before_the_window_starts(shop: Shop) -> None:
    text = shop.config.read_text().replace('url_env = "DATABASE_URL"\n',
                                           'url_env = "DATABASE_URL"\nconnect_timeout = "2s"\n', 1)
    shop.config.write_text(text)
    shop.env["DATABASE_URL_STAGING"] = f"postgresql://app:pw@127.0.0.1:{free_port()}/stage"

    done = shop.run_window()

    assert done.returncode == shop.window("plan").returncode == 2, done.stderr
    assert "cannot reach" in done.stderr and "/stage" in done.stderr
    assert not (shop.folder / ".window" / "journal.sqlite").exists() or \
        "no window has run" in shop.window("status").stderr
    assert shop.banner_log() == []


def test_banner_that_fails_to_go_up_is_taken_down(shop: Shop) -> None:
    shop.configure(banner_on="echo on >> banner.log; exit 1")
    before = shop.fingerprint()
    done = shop.run_window()
    assert done.returncode == 3, done.stderr
    assert shop.banner_log() == ["on", "off"]
    assert shop.status()["state"] == "aborted"
    assert shop.fingerprint() == before


def test_banner_stuck_up_needs_attention(shop: Shop) -> None:
    shop.configure(banner_on="echo on >> banner.log; exit 1",
                   banner_off="echo off >> banner.log; exit 1")
    done = shop.run_window()
    assert done.returncode == 4, done.stderr
    assert shop.status()["state"] == "needs_attention"
    assert "NEEDS ATTENTION" in done.stdout


def test_banner_off_failing_after_a_good_migration_needs_attention(shop: Shop) -> None:
    shop.configure(banner_off="echo off >> banner.log; exit 1")
    done = shop.run_window()
    assert done.returncode == 4, done.stderr
    assert shop.banner_log() == ["on", "off", "off", "off"]  # retried
    assert shop.has_column("orders", "status"), "a good migration is never rolled back"
    assert "only the banner is still up" in done.stdout
    assert shop.phase("rollback")["status"] == "skipped"
    aborted = shop.window("abort", "--confirm", demo.PHRASE)
    assert aborted.returncode == 4
    assert "only the banner is still up" in aborted.stdout
