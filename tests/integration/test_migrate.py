"""A migration that cannot hang production: production drained first, lock and statement
timeouts, and no session of the migrate command left behind after an abort."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from orchestrator.commands import demo
from tests.support.shop import Shop
from tests.support.waiting import wait_until

SERVER_SIDE_SLEEP = (
    'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
    'if [ "$WINDOW_PHASE" = migrate ]; then '
    'psql -X -q -c "SELECT pg_sleep(120)" "$DATABASE_URL" & echo $! > sleeper.pid; wait; fi'
)
MIGRATE_SESSIONS = ("SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'window/%/migrate'")


@pytest.mark.parametrize("client", ["psql", "env -u PGOPTIONS psql"],
                         ids=["libpq", "reads-only-the-url"])
def test_a_lock_held_elsewhere_fails_the_migration_instead_of_hanging(shop: Shop, client: str
                                                                      ) -> None:
    # Prisma's engine reads only its URL, never PGOPTIONS: the second client does the same.
    shop.configure(migrate=f'{client} -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"',
                   migrate_extra='lock_timeout = "1s"\ndrain_timeout = "1s"')
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


def test_the_lock_timeout_reaches_prismas_direct_url_too(shop: Shop) -> None:
    """Where the Prisma schema names a ``directUrl``, migrate connects through it: the same
    database by another URL (its own parameters) gets the bounds in its options too."""
    shop.env["DIRECT_URL"] = f"{shop.prod_url}?application_name=shop-direct"
    shop.configure(migrate='unset PGOPTIONS; psql -X -q -v ON_ERROR_STOP=1 -f migration.sql'
                           ' "$DIRECT_URL"',
                   migrate_extra='lock_timeout = "1s"\ndrain_timeout = "1s"',
                   timeouts='migrate = "40s"')
    locker = psycopg.connect(shop.prod_url)
    locker.execute("SELECT count(*) FROM orders")  # holds ACCESS SHARE until the end
    try:
        done = shop.run_window()
    finally:
        locker.close()

    assert done.returncode == 1, done.stdout + done.stderr
    assert "lock timeout" in shop.phase("migrate")["error"]
    assert shop.status()["state"] == "rolled_back"
    assert not shop.has_column("orders", "status")
    # The rehearsal's DIRECT_URL was staging's (production is hidden from it), bounded alike.
    assert shop.has_column("orders", "status", shop.staging_url)


def test_a_statement_timeout_reaches_a_client_that_reads_only_the_url(shop: Shop) -> None:
    """Prisma's engine ignores PGOPTIONS: the statement bound is in the URL's options too."""
    shop.configure(migrate=(
        'unset PGOPTIONS; psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"'
        ' && if [ "$WINDOW_PHASE" = migrate ]; then'
        ' psql -X -q -v ON_ERROR_STOP=1 -c "SELECT pg_sleep(60)" "$DATABASE_URL"; fi'),
        migrate_extra='statement_timeout = "1s"\ndrain_timeout = "1s"')
    started = time.monotonic()

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 45, "the 60 s statement was cancelled at 1 s"
    assert "statement timeout" in shop.phase("migrate")["error"]
    assert shop.status()["state"] == "rolled_back"


def test_after_an_abort_no_migrate_session_is_left(shop: Shop) -> None:
    shop.configure(migrate=SERVER_SIDE_SLEEP)
    window, _sleeper = shop.start_until_sleeping()
    wait_until(lambda: shop.cluster.psql(MIGRATE_SESSIONS) != "0",
               "the migrate command's session showing up", seconds=30)

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stderr
    assert window.wait(timeout=30) == 1
    assert shop.cluster.psql(MIGRATE_SESSIONS) == "0"


def test_drain_ends_a_session_idle_in_a_transaction(shop: Shop) -> None:
    shop.configure(migrate_extra="terminate_idle_in_transaction = true")
    idle = psycopg.connect(shop.prod_url)
    idle.execute("SELECT count(*) FROM orders")  # its lock would block the ALTER TABLE
    pid = idle.info.backend_pid

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    drain = shop.status()["drain"]
    assert [s["pid"] for s in drain["ended"]] == [pid]
    assert drain["ended"][0]["state"] == "idle in transaction"
    assert drain["drained"] is True
    assert idle.closed or idle.broken or _is_gone(idle)


def _is_gone(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_drain_waits_for_a_running_request_to_finish(shop: Shop) -> None:
    # The banner goes up once the request has reached the server.
    shop.configure(banner_on="echo on >> banner.log && touch maintenance.on && while"
                   " [ ! -f request.sent ]; do sleep 0.05; done && sleep 0.3")
    busy = psycopg.connect(shop.prod_url, autocommit=True)
    pid = busy.info.backend_pid
    def request() -> None:  # one that came in just as the banner went up
        shop.wait_for("maintenance.on")
        (shop.folder / "request.sent").touch()
        busy.execute("SELECT pg_sleep(3)")

    thread = threading.Thread(target=request)
    thread.start()
    try:
        done = shop.run_window()
    finally:
        thread.join(timeout=30)
        busy.close()

    assert done.returncode == 0, done.stderr
    drain = shop.status()["drain"]
    assert pid in [s["pid"] for s in drain["waited_for"]]
    assert drain["waited_s"] >= 1.0 and drain["drained"] is True
    assert drain["ended"] == []


def test_a_drain_that_runs_out_of_time_says_who_is_left_and_goes_on(shop: Shop) -> None:
    shop.configure(migrate_extra='drain_timeout = "1s"')
    idle = psycopg.connect(shop.prod_url)
    idle.execute("SELECT 1")  # idle in a transaction, holding no table lock
    pid = idle.info.backend_pid
    try:
        done = shop.run_window()
    finally:
        idle.close()

    assert done.returncode == 0, done.stderr
    drain = shop.status()["drain"]
    assert drain["drained"] is False
    assert [s["pid"] for s in drain["remaining"]] == [pid]
    assert 1.0 <= drain["waited_s"] < 5


def test_drain_says_which_sessions_it_cannot_see(shop: Shop) -> None:
    """Another role's session (here a superuser's) hides its state from the window's role
    unless it has pg_read_all_stats: the drain cannot wait for it, and says so."""
    hidden = psycopg.connect(shop.cluster.url(shop.prod_db), autocommit=True)
    pid = hidden.info.backend_pid
    try:
        done = shop.run_window()
    finally:
        hidden.close()

    assert done.returncode == 0, done.stderr
    drain = shop.status()["drain"]
    assert [s["pid"] for s in drain["unseen"]] == [pid]
    assert drain["drained"] is True
    assert "drain_cannot_see" in done.stderr


def test_a_rehearsal_never_reaches_production_through_another_variable(shop: Shop) -> None:
    """Prisma's directUrl reads DIRECT_URL; in the engineer's shell it is production's. While
    the window rehearses on staging, every variable naming production names staging."""
    shop.env["DIRECT_URL"] = shop.prod_url
    shop.configure(migrate=(
        'psql -X -At -c "SELECT current_database()" "$DIRECT_URL" >> reached.log && '
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DIRECT_URL"'))

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    assert (shop.folder / "reached.log").read_text().split() == [shop.staging_db, shop.prod_db]
    assert "production_url_hidden" in done.stderr and "DIRECT_URL" in done.stderr
    assert shop.has_column("orders", "status")
