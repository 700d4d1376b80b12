"""Rehearsal records: `window rehearse` alone, reused by a `window run` of the same files while
fresh, never when old or different; files changed after the rehearsal stop the window; the
rehearsal skipped only on purpose, and recorded as a risk."""

from __future__ import annotations

import contextlib
import json
import sqlite3

from orchestrator.commands import demo
from tests.support.prisma import MIGRATION, prisma_project
from tests.support.shop import Shop


def rehearsals_run(shop: Shop) -> list[str]:
    log = shop.folder / "migrate-runs.log"
    return log.read_text().split() if log.exists() else []


def test_a_fresh_rehearsal_is_reused_by_run(shop: Shop) -> None:
    prisma_project(shop)

    rehearsed = shop.window("rehearse")
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert "succeeded" in rehearsed.stdout
    assert shop.banner_log() == [] and not shop.has_column("orders", "status")

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    assert "reusing rehearsal rehearsal_" in done.stdout
    assert rehearsals_run(shop) == ["staging_dry_run", "migrate"]  # rehearsed once only
    assert shop.status()["rehearsal"]["reused_from"].startswith("rehearsal_")
    assert shop.has_column("orders", "status")


def age_rehearsals(shop: Shop, seconds: float) -> None:
    """Every rehearsal in the project's journal recorded ``seconds`` earlier than it ran, as
    if it ran then: its age is what `window run` judges, by the time recorded."""
    with contextlib.closing(sqlite3.connect(shop.folder / ".window" / "journal.sqlite")) as db:
        changed = db.execute("UPDATE rehearsals SET at = at - ?", (seconds,)).rowcount
        db.commit()
    assert changed, "no rehearsal journaled"


def test_an_old_or_different_rehearsal_is_not_reused(shop: Shop) -> None:
    # On a fresh copy each time: staging itself, migrated by the first rehearsal, would no
    # longer hold production's history (test_rehearsal_proof.py).
    prisma_project(shop, staging='mode = "clone"\nmax_age = "1h"')
    assert shop.window("rehearse").returncode == 0
    age_rehearsals(shop, 3600 + 60)  # a minute older than max_age

    old = shop.run_window()
    assert old.returncode == 0, old.stderr
    assert "reusing" not in old.stdout

    # A new migration: a rehearsal of the old files says nothing about it.
    assert shop.window("rehearse").returncode == 0
    newer = shop.folder / "prisma" / "migrations" / "20261201000000_notes" / "migration.sql"
    newer.parent.mkdir()
    newer.write_text("ALTER TABLE orders ADD COLUMN IF NOT EXISTS notes text;\n")
    different = shop.run_window()
    assert different.returncode == 0, different.stderr
    assert "reusing" not in different.stdout
    assert rehearsals_run(shop).count("staging_dry_run") == 4


def test_a_file_changed_after_the_rehearsal_stops_the_window(shop: Shop) -> None:
    """Here the banner command edits the migration (after the rehearsal, before production's
    migration): the migration is never run and production is rolled back."""
    changed = f"prisma/migrations/{MIGRATION}/migration.sql"
    prisma_project(shop, banner_on=f"touch maintenance.on && echo '-- edited' >> {changed}")
    config = shop.config.read_text().replace("[backup]\n", '[backup]\nwhen = "after_banner"\n')
    shop.config.write_text(config)

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    error = shop.phase("migrate")["error"]
    assert "changed after the rehearsal" in error and "nothing was run" in error
    assert rehearsals_run(shop) == ["staging_dry_run"]  # production's never ran
    assert not shop.has_column("orders", "status")


def test_skipping_the_rehearsal_takes_both_switches_and_is_a_recorded_risk(shop: Shop) -> None:
    prisma_project(shop)
    refused = shop.run_window("--skip-staging")
    assert refused.returncode == 2
    assert "[staging] skip = true" in refused.stderr

    prisma_project(shop, staging="skip = true")
    done = shop.run_window("--skip-staging")

    assert done.returncode == 0, done.stderr
    assert rehearsals_run(shop) == ["migrate"]
    status = shop.status()
    assert any("not rehearsed" in risk for risk in status["risks"])
    audit = [json.loads(line) for line in
             (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()]
    assert any(e["event"] == "staging_skipped" for e in audit)


def test_no_rehearsal_while_a_window_is_unfinished(shop: Shop) -> None:
    """Production may be half-migrated, its migrate command still running: a rehearsal of
    it now would measure nothing true and be reused later."""
    prisma_project(shop, banner_on="touch maintenance.on && sleep 60")
    window = shop.start("run", "--confirm", demo.PHRASE)
    shop.wait_for("maintenance.on")
    window.kill()
    window.wait(timeout=30)

    refused = shop.window("rehearse")

    assert refused.returncode == 3, refused.stderr
    assert "unfinished" in refused.stderr
    assert shop.window("abort", "--confirm", demo.PHRASE).returncode == 0
