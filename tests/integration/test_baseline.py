"""The performance baseline end to end: a migration that drops the index a hot query uses
passes every check, and only the baseline sees the query turn into a scan of 300k rows."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from tests.support.shop import Shop

DEFAULT_CHECKS = """
[[checks]]
name = "orders-intact"
kind = "sql"
query = "SELECT count(*) >= 2000 FROM orders"
"""
EVENTS = """
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     account_id int NOT NULL, payload text NOT NULL);
INSERT INTO events (account_id, payload)
  SELECT i % 1000, md5(i::text) FROM generate_series(1, 300000) i;
CREATE INDEX events_account ON events (account_id);
"""
DROP_INDEX = "DROP INDEX IF EXISTS events_account;\n"
ADD_COLUMN = "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;\n"
BY_ACCOUNT = """
[[baseline]]
name = "events-by-account"
query = "SELECT * FROM events WHERE account_id = 42"
"""
SETUP_SECONDS = 10.0


def with_events(shop: Shop) -> None:
    """The big table with its index on production and staging (the dry-run migrates staging
    first, so it must hold what production holds)."""
    started = time.monotonic()
    for url in (shop.prod_url, shop.staging_url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(EVENTS)
            conn.execute("VACUUM ANALYZE events")
    assert time.monotonic() - started < SETUP_SECONDS, "the fixture itself must stay quick"


def audit(shop: Shop, event: str) -> list[dict[str, Any]]:
    lines = (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_a_query_slowed_by_a_dropped_index_fails_the_post_check_and_rolls_back(
        shop: Shop) -> None:
    with_events(shop)
    shop.configure(DROP_INDEX, checks=DEFAULT_CHECKS + BY_ACCOUNT)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    status = shop.status()
    assert status["state"] == "rolled_back"
    error = shop.phase("post_check")["error"]
    assert error.startswith('baseline "events-by-account" took '), error
    assert "before the migration (max 2x)" in error
    entry = status["baseline"]["events-by-account"]
    assert entry["ratio"] > 2 and entry["slow"] is True
    assert entry["after_ms"] - entry["before_ms"] >= 5
    assert shop.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'events_account'") == 1
    assert [e["baseline"] for e in audit(shop, "baseline_compared")] == ["events-by-account"]
    assert "baseline events-by-account:" in shop.window("status").stdout


def test_a_slowdown_only_warns_when_the_baseline_says_so(shop: Shop) -> None:
    with_events(shop)
    shop.configure(DROP_INDEX, checks=DEFAULT_CHECKS + BY_ACCOUNT + 'on_slowdown = "warn"\n')

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    entry = shop.status()["baseline"]["events-by-account"]
    assert entry["ratio"] > 2 and entry["slow"] is True
    assert entry["on_slowdown"] == "warn"
    warned = audit(shop, "baseline_slowdown_accepted")
    assert len(warned) == 1 and "events-by-account" in warned[0]["detail"]
    assert shop.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'events_account'") == 0


def test_a_migration_that_slows_nothing_keeps_its_ratio_near_one(shop: Shop) -> None:
    with_events(shop)
    # The section form, with its own settings; the query reads the whole table (tens of ms),
    # long enough for a stable median. The suite runs on every core at once, so a CPU-bound
    # query can take twice as long from one moment to the next: the limit leaves room.
    shop.configure(ADD_COLUMN, checks=DEFAULT_CHECKS + """
[baseline]
runs = 7
max_slowdown = 4.0
from_pg_stat_statements = 5  # not installed in this database: a warning, nothing more

[[baseline.queries]]
name = "events-total"
query = "SELECT sum(account_id) FROM events"
""")

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    entry = shop.status()["baseline"]["events-total"]
    assert 0.25 <= entry["ratio"] <= 4.0, entry
    assert entry["slow"] is False and entry["error"] is None
    assert shop.has_column("orders", "note")
    assert audit(shop, "baseline_pg_stat_statements_missing")


@pytest.mark.parametrize(("query", "reason"), [
    ("SELECT * FROM evnets", 'relation "evnets" does not exist'),
    ("SELECT 1; COMMIT; DELETE FROM order_items", "cannot insert multiple commands"),
])
def test_a_query_that_fails_before_the_migration_aborts_naming_its_entry(
        shop: Shop, query: str, reason: str) -> None:
    shop.configure(ADD_COLUMN, checks=DEFAULT_CHECKS + f"""
[[baseline]]
name = "bad"
query = "{query}"
""")

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    error = shop.phase("banner_on")["error"]
    assert error.startswith('baseline "bad" failed before the migration'), error
    assert reason in error
    assert "on" not in shop.banner_log(), "measured before the banner went up"
    assert not shop.has_column("orders", "note")
    assert shop.sql("SELECT count(*) FROM order_items") == 6000, "a baseline never writes"


def test_the_busiest_statements_of_pg_stat_statements_are_compared_by_planned_cost(
        shop: Shop) -> None:
    # pg_stat_statements is not a trusted extension: only a superuser can restore it, for the
    # backup's proof and for the rollback.
    shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db)
    shop.cluster.psql("CREATE EXTENSION pg_stat_statements", shop.prod_db)
    with_events(shop)
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        for account in range(20):
            conn.execute(f"SELECT * FROM events WHERE account_id = {account}").fetchall()
    shop.configure(DROP_INDEX, checks=DEFAULT_CHECKS + """
[baseline]
from_pg_stat_statements = 5
""")

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    error = shop.phase("post_check")["error"]
    assert error.startswith('baseline "pg_stat_statements:'), error
    assert "(SELECT * FROM events WHERE account_id = $1) is planned at cost" in error
    compared = shop.status()["baseline"]
    slow = [e for e in compared.values() if e["slow"]]
    assert len(slow) == 1, compared
    assert slow[0]["measure"] == "plan_cost" and slow[0]["ratio"] > 2
    assert slow[0]["before_ms"] is None and slow[0]["after_cost"] > slow[0]["before_cost"]
    texts = [e["query"] for e in compared.values()]
    assert not any("orders" in text or "_seq" in text for text in texts), "the window's own"
