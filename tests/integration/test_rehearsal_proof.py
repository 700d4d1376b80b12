"""A rehearsal proves something or fails: staging that does not hold what production holds
stops the window before anything runs (url mode), a clone of production rehearses anyway,
and a rehearsal that applied nothing while production has migrations pending is a failure,
never reused."""

from __future__ import annotations

import subprocess

from tests.support.prisma import MIGRATION, prisma_project
from tests.support.shop import Shop


def migrate_staging_first(shop: Shop) -> None:
    """An earlier attempt that migrated staging and stopped there."""
    subprocess.run(["./fake-prisma.sh"], cwd=shop.folder, check=True, capture_output=True,
                   env={**shop.env, "DATABASE_URL": shop.staging_url,
                        "WINDOW_PHASE": "staging_dry_run"})
    assert shop.has_column("orders", "status", shop.staging_url)


def assert_production_untouched(shop: Shop, done: subprocess.CompletedProcess[str]) -> None:
    assert not shop.has_column("orders", "status"), done.stdout + done.stderr
    assert shop.banner_log() == []
    assert shop.phase("backup")["status"] == "skipped"


def test_a_staging_already_migrated_stops_the_window_before_anything_runs(shop: Shop) -> None:
    prisma_project(shop)
    migrate_staging_first(shop)

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    error = shop.phase("staging_dry_run")["error"]
    assert "does not hold what production holds" in error
    assert f"staging has {MIGRATION} applied, production has not" in error
    assert '[staging] mode = "clone"' in error and "refresh staging" in error
    assert_production_untouched(shop, done)
    runs = (shop.folder / "migrate-runs.log").read_text().split()
    assert runs == ["staging_dry_run"], "only the earlier attempt ever ran the migration"


def test_clone_mode_rehearses_whatever_staging_holds(shop: Shop) -> None:
    prisma_project(shop, staging='mode = "clone"')
    migrate_staging_first(shop)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.status()["rehearsal"]["applied"] == [MIGRATION]
    assert shop.has_column("orders", "status")


def test_an_empty_rehearsal_fails_and_is_never_reused(shop: Shop) -> None:
    # The migrate command does nothing outside production: a rehearsal that proves nothing.
    prisma_project(shop, migrate='[ "$WINDOW_PHASE" = migrate ] || exit 0; ./fake-prisma.sh')

    rehearsed = shop.window("rehearse")

    assert rehearsed.returncode == 3, rehearsed.stdout + rehearsed.stderr
    assert "applied nothing" in rehearsed.stdout and MIGRATION in rehearsed.stdout

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    assert "reusing" not in done.stdout
    assert "applied nothing" in shop.phase("staging_dry_run")["error"]
    assert_production_untouched(shop, done)
