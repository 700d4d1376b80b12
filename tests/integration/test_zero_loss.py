"""Zero-loss rollback (``[backup] follow``): the standby follows production until the banner is
up, so a rollback gives back every write made after the backup's snapshot; where it cannot,
the window says why and goes on as before (the write gap reported). Whatever the end, no slot,
subscription or publication of the window is left on the server."""

from __future__ import annotations

import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.crash import CRASH_EXIT_CODE
from orchestrator.postgres import follow
from orchestrator.postgres.cluster import Cluster
from tests.support.following import left_on_server
from tests.support.shop import Shop

PASSWORD = "f0llow-pw"  # a throwaway cluster's role
FAILING_CHECK = """
[[checks]]
name = "never-passes-on-production"
kind = "sql"
query = "SELECT current_database() NOT LIKE 'shop%' OR current_database() LIKE '%staging'"
"""
SHOP_COLUMNS = {"orders": "id, customer, placed_at", "products": "id, name, price_cents",
                "order_items": "id, order_id, product_id, quantity"}
# Writes made on production after the snapshot (the banner command runs after the backup):
# inserts, updates and deletes, a table without a primary key taking inserts, and an advanced
# sequence.
AFTER_SNAPSHOT = """
INSERT INTO orders (customer) VALUES ('after the snapshot');
UPDATE products SET price_cents = 4242 WHERE id = 7;
DELETE FROM order_items WHERE id = 11;
INSERT INTO visits (page) VALUES ('/after'), ('/checkout');
SELECT setval('tickets', 9000);
"""
# An UPDATE on the table without a replica identity: it must work on production (a
# publication of UPDATE for that table would make it fail); no subscription can replay it.
UNREPLICABLE = "UPDATE visits SET page = '/home' WHERE page = '/';"


def following_role(shop: Shop) -> str:
    """Production reached as a role that may follow it (superuser: PostgreSQL 15 lets only
    a superuser create a subscription); its name."""
    role = f"{shop.prod_db}_follow"
    shop.cluster.psql(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER"
                      f" REPLICATION PASSWORD '{PASSWORD}'")
    shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db, user=role, password=PASSWORD)
    return role


def with_extras(shop: Shop) -> None:
    """A table without a primary key (no replica identity) and a sequence."""
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE visits (page text, at timestamptz DEFAULT now());"
                     " INSERT INTO visits (page) VALUES ('/'), ('/cart');"
                     " CREATE SEQUENCE tickets")


def configure(shop: Shop, *, failing: bool = True, banner_sql: str = AFTER_SNAPSHOT,
              backup: str = "") -> None:
    shop.configure(
        banner_on='psql -X -q -v ON_ERROR_STOP=1 -f after.sql "$DATABASE_URL"'
                  " && echo on >> banner.log && touch maintenance.on",
        checks=demo.DEMO_CHECKS + (FAILING_CHECK if failing else ""))
    if backup:
        shop.config.write_text(shop.config.read_text().replace("jobs = 2\n",
                                                               f"jobs = 2\n{backup}\n", 1))
    (shop.folder / "after.sql").write_text(banner_sql)


def fell_back_on(shop: Shop, done: subprocess.CompletedProcess[str], table: str) -> str:
    """The window rolled back with the standby found to differ in ``table``: the follow fell
    back, and nothing of it is left on the server; what the window said."""
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert f"the standby differs from production in {table}" in said, said
    assert shop.status()["follow"]["state"] == "fell_back"
    assert left_on_server(shop.cluster, shop.prod_db) == []
    return said


def test_writes_after_the_snapshot_survive_a_rollback(shop: Shop) -> None:
    following_role(shop)
    with_extras(shop)
    configure(shop)

    plan = shop.window("plan")
    done = shop.run_window()

    said = done.stdout + done.stderr
    assert "follows production" in plan.stdout + plan.stderr, plan.stdout + plan.stderr
    assert done.returncode == 1, said
    assert shop.status()["state"] == "rolled_back"
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'after the snapshot'") == 1
    assert shop.sql("SELECT price_cents FROM products WHERE id = 7") == 4242
    assert shop.sql("SELECT count(*) FROM order_items WHERE id = 11") == 0
    assert shop.sql("SELECT string_agg(page, ',' ORDER BY page) FROM visits") == \
        "/,/after,/cart,/checkout"
    assert shop.sql("SELECT nextval('tickets')") == 9001
    assert not shop.has_column("orders", "status"), "the migration was rolled back"
    assert "a rollback loses no write" in said, said
    assert "writes_discarded" not in said
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_a_completed_window_leaves_nothing_and_production_keeps_updating(shop: Shop) -> None:
    following_role(shop)
    with_extras(shop)
    configure(shop, failing=False)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.has_column("orders", "status")
    assert left_on_server(shop.cluster, shop.prod_db) == []
    shop.cluster.psql(UNREPLICABLE, dbname=shop.prod_db)  # no replica identity: still works


def test_an_update_without_a_replica_identity_works_and_is_reported_lost(shop: Shop) -> None:
    following_role(shop)
    with_extras(shop)
    configure(shop, banner_sql=AFTER_SNAPSHOT + UNREPLICABLE)

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 1, said  # the UPDATE in the banner command did not fail
    assert "the standby differs from production in public.visits" in said, said
    assert "writes_discarded" in said and "public.visits" in said, said
    assert shop.sql("SELECT count(*) FROM visits WHERE page = '/home'") == 0
    assert left_on_server(shop.cluster, shop.prod_db) == []


@pytest.mark.parametrize("lost", ["DELETE FROM visits WHERE page = '/cart';",
                                  "TRUNCATE visits;"])  # no write counter shows a TRUNCATE
def test_a_delete_or_truncate_without_a_replica_identity_is_found(shop: Shop,
                                                                  lost: str) -> None:
    following_role(shop)
    with_extras(shop)
    configure(shop, banner_sql=lost)

    done = shop.run_window()

    fell_back_on(shop, done, "public.visits")
    assert shop.sql("SELECT string_agg(page, ',' ORDER BY page) FROM visits") == "/,/cart"


def test_a_large_object_written_after_the_snapshot_falls_back(shop: Shop) -> None:
    following_role(shop)
    configure(shop, banner_sql="SELECT lo_from_bytea(0, 'a receipt');")

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "large objects were written since the backup's snapshot" in said, said
    assert shop.status()["follow"]["state"] == "fell_back"
    assert "writes_discarded" in said and "pg_catalog.pg_largeobject" in said, said
    assert shop.sql("SELECT count(*) FROM pg_largeobject_metadata") == 0
    assert left_on_server(shop.cluster, shop.prod_db) == []


def with_large_tables(shop: Shop) -> None:
    """Two tables of figures.SMALL_BYTES or more: one with a primary key, one without."""
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id bigserial PRIMARY KEY, note text);"
                     " INSERT INTO ledger (note) SELECT repeat('x', 200)"
                     " FROM generate_series(1, 60000);"
                     " CREATE TABLE clicks (n int, note text);"
                     " INSERT INTO clicks SELECT i, repeat('y', 200)"
                     " FROM generate_series(1, 60000) i")


# Flushed before psql hears its last statement is done: counted before the catch-up's
# position, as a session that ended long before the banner is.
FLUSHED = " SELECT pg_stat_force_next_flush();"


def test_large_tables_that_took_replayed_writes_are_not_read_and_lose_nothing(
        shop: Shop) -> None:
    """Updates, deletes and inserts on a large table with a primary key, inserts on one
    without: the subscription replayed each of them, so neither is read at the banner."""
    following_role(shop)
    with_large_tables(shop)
    configure(shop, banner_sql="UPDATE ledger SET note = 'changed' WHERE id = 5;"
              " DELETE FROM ledger WHERE id = 6; INSERT INTO ledger (note) VALUES ('new');"
              " INSERT INTO clicks VALUES (0, 'new');" + FLUSHED)

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    follow = shop.status()["follow"]
    assert follow["state"] == "caught_up", follow
    assert follow["replayed"] == ["public.clicks", "public.ledger"], follow
    assert not {"public.clicks", "public.ledger"} & set(follow["compared"]), follow
    assert shop.sql("SELECT note FROM ledger WHERE id = 5") == "changed"
    assert shop.sql("SELECT count(*) FROM ledger WHERE id = 6") == 0
    assert shop.sql("SELECT count(*) FROM ledger") == 60000
    assert shop.sql("SELECT count(*) FROM clicks WHERE note = 'new'") == 1
    assert "writes_discarded" not in said
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_a_delete_on_a_large_table_without_a_replica_identity_is_found(shop: Shop) -> None:
    following_role(shop)
    with_large_tables(shop)
    configure(shop, banner_sql="DELETE FROM clicks WHERE n = 5;" + FLUSHED)

    done = shop.run_window()

    fell_back_on(shop, done, "public.clicks")
    assert shop.sql("SELECT count(*) FROM clicks WHERE n = 5") == 1


def test_a_delete_whose_counters_lag_is_still_found(shop: Shop) -> None:
    """A session that stays connected reports its counters once a second at most, then
    when idle for 10 s: its DELETE on the large table without a replica identity, made
    within a second of an earlier write, is not in the counters at the catch-up."""
    following_role(shop)
    with_large_tables(shop)
    configure(shop, banner_sql="SELECT 1;")
    shop.configure(banner_on="touch maintenance.on && until [ -e lingered ]; do sleep 0.05;"
                   " done", checks=demo.DEMO_CHECKS + FAILING_CHECK)
    session = psycopg.connect(shop.prod_url, autocommit=True)

    def linger() -> None:
        while not (shop.folder / "maintenance.on").exists():
            time.sleep(0.02)
        session.execute("UPDATE ledger SET note = note WHERE id = 1")  # reported at once
        session.execute("DELETE FROM clicks WHERE n = 5")  # 10 s later
        (shop.folder / "lingered").touch()

    thread = threading.Thread(target=linger)
    thread.start()
    try:
        time.sleep(1.1)  # the session's first report (at its start) over a second ago
        done = shop.run_window()
    finally:
        thread.join(timeout=30)
        with suppress(psycopg.Error):
            session.close()

    fell_back_on(shop, done, "public.clicks")


def test_a_trigger_that_fires_on_the_standby_gets_large_tables_checksummed(
        shop: Shop) -> None:
    """ENABLE ALWAYS: the trigger fires on production and again as the standby applies the
    change, so the standby's row differs though every write was replayed."""
    following_role(shop)
    with_large_tables(shop)
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END$$;"
                     " CREATE TRIGGER stamp BEFORE UPDATE ON ledger FOR EACH ROW"
                     " EXECUTE FUNCTION stamp(); ALTER TABLE ledger ENABLE ALWAYS TRIGGER stamp")
    configure(shop, banner_sql="UPDATE ledger SET note = 'changed' WHERE id = 5;" + FLUSHED)

    done = shop.run_window()

    fell_back_on(shop, done, "public.ledger")


def test_without_replication_the_window_says_so_and_reports_the_gap(shop: Shop) -> None:
    with_extras(shop)
    configure(shop)  # the shop's own role: no REPLICATION attribute

    plan = shop.window("plan")
    done = shop.run_window()

    said = done.stdout + done.stderr
    reason = "this role has no REPLICATION attribute"
    assert reason in plan.stdout + plan.stderr, plan.stdout + plan.stderr
    assert reason in said and done.returncode == 1, said
    assert "writes_discarded" in said, said
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'after the snapshot'") == 0
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_follow_off_is_named_by_plan(shop: Shop) -> None:
    following_role(shop)
    configure(shop, backup='follow = "off"')

    plan = shop.window("plan")

    assert '[backup] follow = "off"' in plan.stdout + plan.stderr, plan.stdout + plan.stderr


def test_ddl_after_the_snapshot_falls_back(shop: Shop) -> None:
    following_role(shop)
    with_extras(shop)
    configure(shop, banner_sql=AFTER_SNAPSHOT + "ALTER TABLE visits ADD COLUMN referrer text;")

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert "production's tables changed (DDL) during the backup" in said, said
    assert done.returncode == 1 and "writes_discarded" in said, said
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_a_catch_up_past_its_limit_falls_back(shop: Shop) -> None:
    following_role(shop)
    with_extras(shop)
    # The standby stops applying: the catch-up cannot end within its second.
    stall = ('psql -X -q -c "ALTER SUBSCRIPTION window_${WINDOW_RUN_ID} DISABLE"'
             ' "${DATABASE_URL%/*}/' + shop.prod_db + '_window_${WINDOW_RUN_ID}"')
    configure(shop, backup='follow_catch_up = "1s"')
    shop.configure(banner_on=stall + ' && psql -X -q -v ON_ERROR_STOP=1 -f after.sql'
                   ' "$DATABASE_URL" && touch maintenance.on',
                   checks=demo.DEMO_CHECKS + FAILING_CHECK)
    shop.config.write_text(shop.config.read_text().replace(
        "jobs = 2\n", 'jobs = 2\nfollow_catch_up = "1s"\n', 1))

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert "follow_catch_up" in said and "bytes behind" in said, said
    assert done.returncode == 1 and "writes_discarded" in said, said
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_no_loss_under_load_during_the_backup(shop: Shop) -> None:
    """Inserts, updates and deletes from a writer that runs until the banner: after the
    rollback, production equals what it held when the writer stopped, table by table."""
    following_role(shop)
    configure(shop, banner_sql="SELECT 1;")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(shop.prod_url, autocommit=True) as conn:
            n = 0
            while not stop.is_set() and not (shop.folder / "maintenance.on").exists():
                n += 1
                conn.execute("INSERT INTO orders (customer) VALUES (%s)", (f"load {n}",))
                conn.execute("UPDATE products SET price_cents = price_cents + 1"
                             " WHERE id = %s", (1 + n % 200,))
                conn.execute("DELETE FROM order_items WHERE id = %s", (n,))
                written[0] += 3
                time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        done = shop.run_window()
    finally:
        stop.set()
        thread.join(timeout=30)

    assert done.returncode == 1, done.stdout + done.stderr
    assert written[0] > 100, written
    assert shop.sql("SELECT count(*) FROM orders WHERE customer LIKE 'load %'") == \
        written[0] // 3
    retained = f"{shop.prod_db}_failed_{shop.status()['run_id']}"
    shop.cluster.psql(f"ALTER DATABASE {retained} ALLOW_CONNECTIONS true")
    for table, columns in SHOP_COLUMNS.items():  # the retained one was migrated: its columns
        query = f"SELECT count(*) || md5(string_agg(({columns})::text, ',' ORDER BY id))" \
                f" FROM {table}"
        assert shop.cluster.psql(query, dbname=retained) == \
            shop.cluster.psql(query, dbname=shop.prod_db), table
    assert left_on_server(shop.cluster, shop.prod_db) == []


def test_the_catch_up_target_is_past_every_asynchronous_commit(shop: Shop) -> None:
    """The test cluster commits asynchronously (synchronous_commit = off): the position the
    catch-up waits for is flushed past every commit made before it, each time."""
    with psycopg.connect(shop.prod_url, autocommit=True) as writer, \
            psycopg.connect(shop.prod_url, autocommit=True) as window:
        for n in range(50):
            writer.execute("INSERT INTO orders (customer) VALUES (%s)", (f"async {n}",))
            end = writer.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert end is not None
            target = follow.current_lsn(window)
            flushed = window.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn"
                                     " AND %s::pg_lsn >= %s::pg_lsn",
                                     (target, target, end[0])).fetchone()
            assert flushed == (True,), (n, target, end[0])


def test_what_an_earlier_window_left_is_named_by_plan_and_status(shop: Shop) -> None:
    left = "window_20200101_000000_abcd"
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:  # as the shop's owner
        conn.execute(f"CREATE PUBLICATION {left} FOR TABLE orders")  # type: ignore[arg-type]
    configure(shop, failing=False, banner_sql="SELECT 1;")
    done = shop.run_window()
    assert done.returncode == 0, done.stdout + done.stderr

    plan = shop.window("plan")
    drop = f'in {shop.prod_db}, DROP PUBLICATION "{left}"'
    assert f"left by an earlier window: publication {left}" in plan.stdout, plan.stdout
    assert drop in plan.stdout, plan.stdout
    # A window that ended whole is told from the journal alone; one that did not end asks.
    assert left not in shop.window("status").stdout
    shop.env["WINDOW_CRASH_AT"] = "journal.conclude_phase.preflight#1"
    crashed = shop.run_window()
    del shop.env["WINDOW_CRASH_AT"]
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stdout + crashed.stderr
    assert drop in shop.window("status").stdout
    shop.cluster.psql(f'DROP PUBLICATION "{left}"', dbname=shop.prod_db)
    assert left not in shop.window("status").stdout


def test_wal_level_below_logical_is_named_by_plan_and_the_run(tmp_path: Path) -> None:
    """A server of its own (wal_level is set at start): the window goes on as before, and
    says why the standby does not follow."""
    server = Cluster().init()  # in a folder the postgres user may reach
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write("wal_level = replica\n")
    server.start()
    try:
        shop = Shop(server, tmp_path / "project", "shop", "shop_staging",
                    demo.create_shop(server, "shop"), demo.create_shop(server, "shop_staging"))
        following_role(shop)
        configure(shop, banner_sql="INSERT INTO orders (customer) VALUES ('lost');")

        plan, done = shop.window("plan"), shop.run_window()

        said = done.stdout + done.stderr
        reason = "wal_level is replica on production, not logical"
        assert reason in plan.stdout, plan.stdout + plan.stderr
        assert reason in said and done.returncode == 1, said
        assert "writes_discarded" in said
        assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'lost'") == 0
    finally:
        server.destroy()
