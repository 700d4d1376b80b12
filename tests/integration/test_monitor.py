"""Live monitoring: while production is migrated or restored, the window samples the server's
sessions and keeps the samples for ``window status``."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from orchestrator import config
from orchestrator.commands import demo
from orchestrator.engine import monitor
from orchestrator.engine.context import Context
from orchestrator.engine.journal import Journal
from orchestrator.postgres import pg
from tests.support.shop import Shop, add_free_sample

MIGRATE_AFTER_A_SLOW_STATEMENT = (
    'if [ "$WINDOW_PHASE" = migrate ]; then psql -X -q -c "SELECT pg_sleep(3)" "$DATABASE_URL";'
    ' fi && psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"'
)
# Production's migration announces itself, then waits until the test holds its lock.
MIGRATE_WHEN_LOCKED = (
    'if [ "$WINDOW_PHASE" = migrate ]; then touch migrate.started;'
    ' while [ ! -f locked ]; do sleep 0.05; done; fi &&'
    ' psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"'
)


def samples(shop: Shop, phase: str) -> list[dict[str, Any]]:
    return [s for s in shop.status()["monitor"] if s["phase"] == phase]


def test_a_slow_migration_is_sampled_while_it_runs(shop: Shop) -> None:
    shop.configure(migrate=MIGRATE_AFTER_A_SLOW_STATEMENT)

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    seen = samples(shop, "migrate")
    assert len(seen) >= 2
    assert any(s["active"] >= 1 and s["longest_s"] >= 1 for s in seen), seen
    assert {"at", "connections", "by_state", "waiting", "blocked", "ungranted_locks"} <= {
        *seen[0]}
    assert "monitor" in done.stderr  # shown live
    assert "pg_sleep" not in str(shop.status()["monitor"])  # never the query text


def test_a_session_blocking_the_migration_is_named(shop: Shop) -> None:
    shop.configure(migrate=MIGRATE_WHEN_LOCKED, migrate_extra='lock_timeout = "20s"')
    window = shop.start("run", "--confirm", demo.PHRASE)
    shop.wait_for("migrate.started")
    holder = psycopg.connect(shop.prod_url)
    holder_pid = holder.info.backend_pid
    release = threading.Timer(4, holder.rollback)
    try:
        holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        (shop.folder / "locked").touch()
        release.start()
        assert window.wait(timeout=60) == 0, shop.background_output()
    finally:
        release.cancel()
        holder.close()

    blocked = [b for s in samples(shop, "migrate") if s["waiting"] >= 1 for b in s["blocked"]]
    assert any(holder_pid in b["blocked_by"] for b in blocked), blocked
    assert all(b["waiting_s"] >= 0 for b in blocked)


def test_a_rollback_is_sampled(shop: Shop) -> None:
    shop.configure(demo.BAD_MIGRATION)
    add_free_sample(shop.prod_url)  # only production breaks

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    assert samples(shop, "rollback")
    assert "samples during rollback" in shop.window("status").stdout


def test_monitoring_can_be_turned_off(shop: Shop) -> None:
    shop.config.write_text(shop.config.read_text() + "\n[monitor]\nenabled = false\n")

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    assert shop.status()["monitor"] == []


def test_a_short_phase_still_gets_a_first_and_a_final_sample(shop: Shop) -> None:
    settings = config.load(shop.config)
    ctx = Context(settings=settings, journal=Journal.open(settings.state_dir), run_id="r1",
                  target=pg.Db.from_url(shop.prod_url), staging=pg.Db.from_url(shop.staging_url))
    started = time.monotonic()

    with monitor.sampling(ctx.for_phase("migrate", time.time() + 60, lambda: None)):
        time.sleep(0.1)

    took, taken = time.monotonic() - started, ctx.journal.samples("r1")
    ctx.journal.close()
    assert took < 1.0
    assert [s["phase"] for s in taken] == ["migrate", "migrate"]
