"""Rehearsal modes and timeline validation, end to end: the clone of production migrated and
dropped, a migration too slow for its timeout refused before the backup, the ETA shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator import config
from orchestrator.commands import demo
from orchestrator.engine import eta
from orchestrator.postgres import pg
from orchestrator.toolkit.rehearsal import database_on
from tests.support.shop import Shop, add_free_sample

# The migration, then which database it ran on: the scratch copy, then production.
RECORDING = ('psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" &&'
             ' psql -X -At -c "SELECT current_database()" "$DATABASE_URL" >> migrated.log')


def clone_mode(shop: Shop, *keys: str, **overrides: Any) -> None:
    """``[staging] mode = "clone"`` (and ``keys``), staging reached as ``localhost`` so that
    which server a scratch database went to shows in its name (production: 127.0.0.1)."""
    shop.env["DATABASE_URL_STAGING"] = shop.staging_url.replace("127.0.0.1", "localhost")
    text = shop.configure(overrides.pop("migration_sql", demo.GOOD_MIGRATION),
                          **overrides).read_text()
    staging = 'url_env = "DATABASE_URL_STAGING"'
    shop.config.write_text(text.replace(staging, "\n".join([staging, 'mode = "clone"', *keys])))


def rehearsed_eta(shop: Shop) -> eta.Eta:
    """What the window expected from its rehearsal (an ended window shows no ETA)."""
    return eta.estimate(config.load(shop.config), shop.status()["rehearsal"])


def phase_line(plan: str, phase: str) -> str:
    """The line of ``phase`` in plan's table of phases (timeout, expected)."""
    return next(line for line in plan.splitlines()
                if re.match(rf"    {phase} +\d+s  ~", line))


def leftovers(shop: Shop, run_id: str) -> list[str]:
    """The run's scratch databases and rehearsal archive (its folder too, when empty)."""
    folder = shop.folder / "backups" / ".rehearsal"
    found = [folder / run_id] if (folder / run_id).exists() else \
        [folder] if folder.exists() else []
    return shop.databases(f"%rehearsal%{run_id}") + [str(path) for path in found]


def test_clone_mode_migrates_a_fresh_copy_and_leaves_staging_untouched(shop: Shop) -> None:
    clone_mode(shop, migrate=RECORDING)
    staging_schema = shop.schema(shop.staging_db)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    run_id = shop.status()["run_id"]
    scratch = f"{shop.prod_db}_rehearsal_{run_id}"
    assert (shop.folder / "migrated.log").read_text().split() == [scratch, shop.prod_db]
    assert shop.has_column("orders", "status")
    assert shop.schema(shop.staging_db) == staging_schema
    assert leftovers(shop, run_id) == []
    rehearsal = shop.status()["rehearsal"]
    assert rehearsal["mode"] == "clone"
    assert rehearsal["database"] == f"localhost:{shop.cluster.port}/{scratch}"
    assert all(rehearsal[key] > 0 for key in ("dump_s", "restore_s", "migrate_s", "checks_s"))
    assert f"rehearsal (clone) on localhost:{shop.cluster.port}/{scratch}: dump" in done.stdout
    assert demo.APP_PASSWORD not in done.stdout + done.stderr
    expected = rehearsed_eta(shop)
    assert expected.source == "rehearsal"
    assert expected.point_of_no_return_s > expected.expected_s
    plan = shop.window("plan").stdout
    assert f"rehearsed by window {run_id}" in plan
    assert phase_line(plan, "migrate").endswith(" rehearsed")


def test_a_migration_failing_on_the_clone_stops_before_production(shop: Shop) -> None:
    # Only production holds the row the constraint trips on: staging would have passed.
    add_free_sample(shop.prod_url)
    clone_mode(shop, migration_sql=demo.BAD_MIGRATION)
    before, schema = shop.fingerprint(), shop.schema()

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == []
    status = shop.status()
    assert "products_price_positive" in shop.phase("staging_dry_run")["error"]
    assert shop.phase("backup")["status"] == "skipped"
    assert status["rehearsal"] is None
    assert leftovers(shop, status["run_id"]) == []
    assert not (shop.folder / "backups" / status["run_id"]).exists()


def test_clone_on_production_puts_the_scratch_copy_beside_production(shop: Shop) -> None:
    clone_mode(shop, 'clone_on = "production"')

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    run_id = shop.status()["run_id"]
    assert shop.status()["rehearsal"]["database"] == \
        f"127.0.0.1:{shop.cluster.port}/{shop.prod_db}_rehearsal_{run_id}"
    assert leftovers(shop, run_id) == []
    assert shop.has_column("orders", "status")
    assert not shop.has_column("orders", "status", shop.staging_url)


def test_a_migration_slower_than_its_share_of_the_timeout_refuses_before_the_backup(
        shop: Shop) -> None:
    shop.configure(demo.GOOD_MIGRATION + "SELECT pg_sleep(4);\n", timeouts='migrate = "6s"')
    schema = shop.schema()

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    error = shop.phase("staging_dry_run")["error"]
    assert "the rehearsed migration took 4." in error
    assert "of the 6s migrate timeout (at most 50%: [staging] max_migrate_share)" in error
    assert "max_migrate_share" in done.stdout
    status = shop.status()
    assert status["state"] == "aborted"
    assert shop.phase("backup")["status"] == "skipped"
    assert not (shop.folder / "backups" / status["run_id"]).exists()
    assert shop.banner_log() == []
    assert shop.schema() == schema


def test_plan_shows_the_eta_and_the_point_of_no_return(shop: Shop) -> None:
    done = shop.window("plan")

    assert done.returncode == 0, done.stderr
    # The runbook's lower bounds: 10s + 10m + 5m + 10s + 2m + 5m + 10s.
    assert "  eta                 ~22m30s, by the runbook's timeline" in done.stdout
    # 41 min of forward timeouts, less a 10 min rollback and 10s for the banner.
    assert "  point of no return  +30m50s into the 41m00s window" in done.stdout
    assert phase_line(done.stdout, "migrate").split() == ["migrate", "300s", "~2m00s"]
    assert not (shop.folder / ".window").exists(), "plan must touch nothing"
    assert not Path(shop.folder / "backups").exists()


# The first rehearsal's migration records its database, then hangs (once) until killed.
HANGS_ONCE_IN_REHEARSAL = (
    RECORDING + ' && if [ "$WINDOW_PHASE" = staging_dry_run ] && [ ! -f attempted ]; then'
    " touch attempted; sleep 60 & echo $! > sleeper.pid; wait; fi")


def crash_during_the_rehearsal(shop: Shop) -> str:
    """A window killed (-9) while its migration hangs on the scratch copy; the copy's name."""
    clone_mode(shop, migrate=HANGS_ONCE_IN_REHEARSAL)
    window, _sleeper = shop.start_until_sleeping()
    window.kill()
    window.wait(timeout=30)
    run_id = shop.status()["run_id"]
    scratch = f"{shop.prod_db}_rehearsal_{run_id}"
    archive = shop.folder / "backups" / ".rehearsal" / run_id
    assert leftovers(shop, run_id) == [scratch, str(archive)], "the copy and its archive"
    return scratch


def test_a_resumed_window_drops_the_leftover_copy_and_rehearses_again(shop: Shop) -> None:
    scratch = crash_during_the_rehearsal(shop)

    resumed = shop.window("resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (shop.folder / "migrated.log").read_text().split() == [scratch, scratch, shop.prod_db]
    assert leftovers(shop, shop.status()["run_id"]) == []


def test_an_abort_after_a_crash_drops_the_leftover_copy(shop: Shop) -> None:
    crash_during_the_rehearsal(shop)

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert shop.status()["state"] == "aborted"
    assert leftovers(shop, shop.status()["run_id"]) == []
    assert not shop.has_column("orders", "status")


def test_the_scratch_url_keeps_the_form_and_parameters_of_its_server() -> None:
    prisma = pg.Db.from_url("postgresql://app:p%40ss@db.internal:6543/shop?schema=app"
                            "&sslmode=require")
    scratch = database_on(prisma, "shop_rehearsal_1")

    assert scratch.url == ("postgresql://app:p%40ss@db.internal:6543/shop_rehearsal_1"
                           "?schema=app&sslmode=require")
    assert (scratch.dbname, scratch.schema, scratch.params["sslmode"]) == \
        ("shop_rehearsal_1", "app", "require")
    # libpq lets ?dbname= override the path: the scratch name must win all the same.
    overridden = database_on(pg.Db.from_url("postgresql://app@h/x?dbname=shop"), "scratch")
    assert overridden.dbname == "scratch"
    keywords = database_on(pg.Db.from_url("host=h dbname=shop user=app"), "scratch")
    assert (keywords.dbname, keywords.host) == ("scratch", "h")
