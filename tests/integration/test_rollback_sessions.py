"""The rollback's swap ends the sessions that hold production, with the privileges the README
documents (pg_signal_backend, no pg_read_all_stats): another role's idle pool connection no
longer outlasts the rollback; a session it may not end is named, with the statement that ends
it, instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from orchestrator.commands import demo
from tests.support.shop import Shop, add_free_sample

OTHER_ROLE, OTHER_PASSWORD = "reporting_app", "r3port-pw"


@contextmanager
def idle_session(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A pool's idle connection to production, kept open across the window."""
    conn = psycopg.connect(url, autocommit=True, application_name="pool")
    try:
        yield conn
    finally:
        conn.close()


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
    assert not shop.has_column("orders", "status"), "production holds its backup again"


def test_a_session_it_may_not_end_is_named_with_the_statement_that_ends_it(shop: Shop) -> None:
    a_failing_window(shop, rollback="5s")

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
