"""The rollback's swap ends the sessions that hold production, with the privileges the README
documents (pg_signal_backend, no pg_read_all_stats): another role's idle pool connection no
longer outlasts the rollback; a session it may not end is named, with the statement that ends
it, instead of a traceback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from orchestrator.commands import demo
from tests.support.sessions import idle_session
from tests.support.shop import Shop, add_free_sample, failing_migration
from tests.support.waiting import wait_until

OTHER_ROLE, OTHER_PASSWORD = "reporting_app", "r3port-pw"


def a_failing_window(shop: Shop, rollback: str) -> None:
    shop.configure(demo.BAD_MIGRATION, timeouts=f'rollback = "{rollback}"')
    add_free_sample(shop.prod_url)  # BAD_MIGRATION trips on it on production only


def test_another_roles_idle_session_is_ended_and_the_rollback_finishes(shop: Shop) -> None:
    shop.cluster.psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname ="
                      f" '{OTHER_ROLE}') THEN CREATE ROLE {OTHER_ROLE} LOGIN PASSWORD"
                      f" '{OTHER_PASSWORD}'; END IF; END $$")
    a_failing_window(shop, rollback="60s")
    other = shop.cluster.url(shop.prod_db, user=OTHER_ROLE, password=OTHER_PASSWORD)

    with idle_session(other) as pool:
        done = shop.run_window()
        ended = pool.closed or pool.broken or not _answers(pool)

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["state"] == "rolled_back"
    assert ended, "the other role's idle session was ended by the swap"
    assert f"other roles' sessions connected now: {OTHER_ROLE} (1); a rollback's swap ends" \
        " them" in done.stdout + done.stderr, "preflight lists them"
    assert not shop.has_column("orders", "status"), "production holds its backup again"


def test_a_session_it_may_not_end_is_named_with_the_statement_that_ends_it(shop: Shop) -> None:
    a_failing_window(shop, rollback="8s")  # a refused rename waits 5 s: named once in time

    # A superuser's session: pg_signal_backend may never end it.
    with idle_session(shop.cluster.url(shop.prod_db)) as admin:
        pid = admin.info.backend_pid
        done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 4, said
    assert "Traceback" not in said and "ObjectInUse" not in said
    error = shop.phase("rollback")["error"]
    # The role may not look into a superuser's session: it says so, and what would help.
    assert f"pid {pid} (user postgres, application pool, hidden from this role: grant it" \
        " pg_read_all_stats)" in error
    assert f"pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({pid})" in error
    assert shop.cluster.password not in said
    # While it waited, it said every few seconds who held production.
    waiting = [line for line in said.splitlines() if "swap_waiting_for" in line]
    assert waiting and f"pid {pid} (user postgres, application pool" in waiting[0], said
    # The manual steps name the verified standby first, and the window's own retry.
    assert "`window resume` (or `window abort`) tries it again from where it stopped," \
        f" swapping in {shop.prod_db}_window_" in said
    assert "createdb" not in said.split("Should ")[0]


@pytest.mark.parametrize("ending", ["resume", "abort"])
def test_a_rollback_stuck_on_a_session_is_finished_from_the_standby_once_it_leaves(
        shop: Shop, ending: str) -> None:
    a_failing_window(shop, rollback="3s")
    with idle_session(shop.cluster.url(shop.prod_db)):  # a superuser's: only it may end it
        stuck = shop.run_window()
    assert stuck.returncode == 4, stuck.stdout + stuck.stderr
    standby = shop.databases(f"{shop.prod_db}_window_%")
    assert standby, "the verified standby is kept for the retry"

    done = shop.window("resume") if ending == "resume" else \
        shop.window("abort", "--confirm", demo.PHRASE)

    said = done.stdout + done.stderr
    assert done.returncode == (1 if ending == "resume" else 0), said
    assert "Traceback" not in said
    assert shop.status()["state"] == "rolled_back"
    assert shop.phase("rollback")["status"] == "succeeded"
    assert shop.status()["rollback"]["method"] == "swap", "the verified standby swapped in"
    assert not shop.has_column("orders", "coupon_code"), "production holds its backup again"
    assert shop.databases(f"{shop.prod_db}_window_%") == [], "the standby became production"
    assert shop.databases(f"{shop.prod_db}_failed_%"), "the migrated database is kept"
    assert shop.banner_log()[-1] == "off"


def _answers(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextmanager
def cdc_consumer(shop: Shop, slot: str) -> Iterator[subprocess.Popen[bytes]]:
    """pg_recvlogical streaming production's changes from ``slot``, as Debezium would, under a
    role of its own (REPLICATION, nothing else)."""
    shop.cluster.psql(f"DROP ROLE IF EXISTS cdc_reader; CREATE ROLE cdc_reader LOGIN REPLICATION"
                      f" PASSWORD '{OTHER_PASSWORD}'")
    shop.cluster.psql(f"SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')",
                      dbname=shop.prod_db)
    consumer = subprocess.Popen(
        ["pg_recvlogical", "-h", "127.0.0.1", "-p", str(shop.cluster.port), "-U", "cdc_reader",
         "-d", shop.prod_db, "--slot", slot, "--start", "-f", "/dev/null"],
        env={**os.environ, "PGPASSWORD": OTHER_PASSWORD}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: shop.cluster.psql(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'") == "t",
            "pg_recvlogical streaming")
        yield consumer
    finally:
        consumer.kill()
        consumer.wait(timeout=30)
        wait_until(lambda: shop.cluster.psql(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'") == "f",
            "the slot released")
        shop.cluster.psql(f"SELECT pg_drop_replication_slot('{slot}')")


def test_a_cdc_consumer_is_ended_and_the_slot_it_leaves_is_said_before_and_after(
        shop: Shop) -> None:
    slot = f"cdc_{shop.prod_db}"
    a_failing_window(shop, rollback="60s")

    with cdc_consumer(shop, slot):
        plan = shop.window("plan")
        done = shop.run_window()

    said = done.stdout + done.stderr
    assert plan.returncode == 0, plan.stderr
    assert f"a rollback leaves logical slot {slot} (test_decoding) on the retained database" \
        in plan.stdout
    assert done.returncode == 1, said
    assert shop.status()["state"] == "rolled_back" and "Traceback" not in said
    assert not shop.has_column("orders", "coupon_code"), "production holds its backup again"
    retained = shop.status()["rollback"]["retained_database"]
    behind = shop.status()["rollback"]["left_behind"]
    assert len(behind) == 1 and behind[0].startswith(
        f"logical slot {slot} (test_decoding) on {retained}: its consumer fails"), behind
    assert f"SELECT pg_drop_replication_slot('{slot}')" in behind[0]
    assert f"left behind: logical slot {slot}" in said


def test_a_subscription_refuses_a_role_that_cannot_stop_it_and_is_disabled_by_one_that_can(
        shop: Shop) -> None:
    upstream, name = f"{shop.prod_db}_upstream", f"sub_{shop.prod_db}"
    shop.cluster.psql(f"CREATE DATABASE {upstream}")
    shop.cluster.psql("CREATE TABLE rates (id int PRIMARY KEY); CREATE PUBLICATION rates_pub"
                      " FOR TABLE rates", dbname=upstream)
    shop.cluster.psql(f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')",
                      dbname=upstream)
    shop.cluster.psql(f"CREATE TABLE rates (id int PRIMARY KEY); ALTER TABLE rates OWNER TO"
                      f" {demo.APP_USER}", dbname=shop.prod_db)
    shop.cluster.psql(f"CREATE SUBSCRIPTION {name} CONNECTION 'host="
                      f"{shop.cluster.root} port={shop.cluster.port} dbname={upstream}"
                      f" user=postgres' PUBLICATION rates_pub WITH (create_slot = false,"
                      f" slot_name = '{name}')", dbname=shop.prod_db)
    a_failing_window(shop, rollback="60s")

    refused = shop.window("plan")

    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"the right to disable production's subscription(s) {name}" in refused.stderr
    assert f'ALTER SUBSCRIPTION "{name}" DISABLE;' in refused.stderr

    shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db)  # a superuser may stop it
    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert shop.status()["state"] == "rolled_back" and "Traceback" not in said
    assert shop.cluster.password not in said
    retained = shop.status()["rollback"]["retained_database"]
    assert f"subscription(s) {name} stay on {retained}, disabled" in \
        " ".join(shop.status()["rollback"]["left_behind"])
    enabled = shop.cluster.psql("SELECT d.datname || ':' || s.subenabled FROM pg_subscription s"
                                " JOIN pg_database d ON d.oid = s.subdbid ORDER BY 1")
    assert f"{retained}:false" in enabled.split() and f"{shop.prod_db}:true" not in enabled
    for database in (retained, shop.prod_db):
        if f"{database}:" in enabled:
            shop.cluster.psql(f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE);"
                              f" DROP SUBSCRIPTION {name}", dbname=database)
    shop.cluster.psql(f"SELECT pg_drop_replication_slot('{name}')")


def test_a_role_and_a_slot_a_migration_made_are_named_with_their_undo_after_a_rollback(
        shop: Shop) -> None:
    role, slot = f"{shop.prod_db}_reporter", f"{shop.prod_db}_migration_slot"
    shop.env["ADMIN_URL"] = shop.cluster.url(shop.prod_db)
    failing_migration(
        shop,
        f'psql -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "CREATE ROLE {role} LOGIN"',
        f"psql -X -q -v ON_ERROR_STOP=1 \"$ADMIN_URL\" -c \"SELECT"
        f" pg_create_logical_replication_slot('{slot}', 'test_decoding')\"",
        timeouts='rollback = "60s"')

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    rollback = shop.status()["rollback"]
    changes = rollback["cluster_changes"]
    assert [c["undo"] for c in changes] == [f'DROP ROLE "{role}";'], changes
    assert role in changes[0]["what"] and f"not undone by the restore: {changes[0]['what']}" \
        in said
    assert any(f"logical slot {slot} (test_decoding) on {rollback['retained_database']}" in what
               for what in rollback["left_behind"]), rollback["left_behind"]
    assert shop.cluster.password not in said and "Traceback" not in said
    shop.cluster.psql(f"SELECT pg_drop_replication_slot('{slot}'); DROP ROLE {role}")


def test_status_says_first_when_production_is_missing_and_resume_brings_it_back(
        shop: Shop) -> None:
    a_failing_window(shop, rollback="3s")
    with idle_session(shop.cluster.url(shop.prod_db)):
        assert shop.run_window().returncode == 4
    retained = f"{shop.prod_db}_failed_{shop.status()['run_id']}"
    # Someone began the manual steps and stopped half-way: production renamed aside.
    shop.cluster.psql(f"ALTER DATABASE {shop.prod_db} RENAME TO {retained}")

    shown = shop.window("status")

    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith(f"PRODUCTION IS MISSING: no database is named {shop.prod_db}")
    assert "Run `window resume`" in first
    assert shop.status()["production_missing"].startswith("PRODUCTION IS MISSING")

    done = shop.window("resume")

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["state"] == "rolled_back"
    assert "production_missing" not in shop.status()
    assert not shop.has_column("orders", "coupon_code"), "production holds its backup again"
    assert shop.databases(retained) == [retained], "the migrated database is kept"
