"""A migration that cannot hang production: lock and statement timeouts, and no session of
the migrate command left behind after an abort."""

from __future__ import annotations

import time

import psycopg

from orchestrator import demo
from tests.integration.conftest import Shop

SERVER_SIDE_SLEEP = (
    'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
    'if [ "$WINDOW_PHASE" = migrate ]; then '
    'psql -X -q -c "SELECT pg_sleep(120)" "$DATABASE_URL" & echo $! > sleeper.pid; wait; fi'
)
MIGRATE_SESSIONS = ("SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'window/%/migrate'")


def test_a_lock_held_elsewhere_fails_the_migration_instead_of_hanging(shop: Shop) -> None:
    shop.config.write_text(shop.config.read_text().replace(
        "[migrate]\n", '[migrate]\nlock_timeout = "1s"\n'))
    locker = psycopg.connect(shop.prod_url)
    locker.execute("SELECT count(*) FROM orders")  # holds ACCESS SHARE until the end
    started = time.monotonic()
    try:
        done = shop.run_window()
    finally:
        locker.close()

    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert "lock timeout" in shop.phase("migrate")["error"]
    assert shop.status()["state"] == "rolled_back"


def test_after_an_abort_no_migrate_session_is_left(shop: Shop) -> None:
    shop.configure(migrate=SERVER_SIDE_SLEEP)
    window, _sleeper = shop.start_until_sleeping()
    end = time.monotonic() + 30
    while shop.cluster.psql(MIGRATE_SESSIONS) == "0":
        assert time.monotonic() < end, "the migrate command's session never showed up"
        time.sleep(0.1)

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stderr
    assert window.wait(timeout=30) == 1
    assert shop.cluster.psql(MIGRATE_SESSIONS) == "0"
