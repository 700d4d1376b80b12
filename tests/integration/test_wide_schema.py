"""Wide schemas: a window completes however many objects production holds.

A shop of 250 tables (each with a key, a self-reference, four indexes and grants to two roles)
and thousands of functions has a table of contents of several MB, far more than the tail of a
command's output the window keeps to show; the backup must read it whole. Its tables are
described by a few connections that take many tables each, not one per table. Table names are
keys as PostgreSQL quotes them, so two that read alike as ``schema.table`` stay apart.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.engine.context import Context
from orchestrator.engine.journal import Journal
from orchestrator.postgres import figures, pg
from orchestrator.toolkit import dumps
from tests.support.settings import make_settings
from tests.support.shop import Shop

TABLES = 250
FUNCTIONS = 8000
WIDE = f"""
DO $$
DECLARE i int; n text;
BEGIN
  FOR i IN 1..{TABLES} LOOP
    n := format('customer_order_line_item_history_%s', i);
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, parent_id bigint REFERENCES %I(id),
                    a int, b int, c text, d timestamptz DEFAULT now())', n, n);
    EXECUTE format('CREATE INDEX ON %I (a); CREATE INDEX ON %I (b); CREATE INDEX ON %I (c);
                    CREATE INDEX ON %I (d)', n, n, n, n);
    EXECUTE format('GRANT SELECT ON %I TO wide_reader; GRANT SELECT, INSERT ON %I TO
                    wide_writer', n, n);
    EXECUTE format('INSERT INTO %I SELECT g, NULLIF(g - 1, 0), g, g, %L, now()
                    FROM generate_series(1, 3) AS g', n, n);
  END LOOP;
  FOR i IN 1..{FUNCTIONS} LOOP
    n := format('order_line_item_reconciliation_adjustment_with_history_%s', i);
    EXECUTE format('CREATE FUNCTION %I(order_id bigint, line integer) RETURNS integer
                    LANGUAGE sql IMMUTABLE AS ''SELECT 1''', n);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I(bigint, integer) TO wide_reader,
                    wide_writer', n);
  END LOOP;
END $$;
"""


def execute(shop: Shop, statements: str) -> None:
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute(statements)  # type: ignore[arg-type]


def sessions(shop: Shop) -> int:
    """Connections made to production so far (each counted once it has ended)."""
    return int(shop.cluster.psql(
        "SELECT pg_stat_clear_snapshot(); SELECT sessions FROM pg_stat_database"
        f" WHERE datname = '{shop.prod_db}'").split()[-1])


def test_a_window_completes_on_a_schema_whose_table_of_contents_is_several_mb(
        shop: Shop) -> None:
    shop.cluster.psql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname ="
                      " 'wide_reader') THEN CREATE ROLE wide_reader; CREATE ROLE wide_writer;"
                      " END IF; END$$")
    execute(shop, WIDE)
    before = sessions(shop)

    done = shop.run_window()

    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    backup = shop.status()["backup"]
    toc = subprocess.run(["pg_restore", "--list", backup["path"]], capture_output=True,
                         check=True).stdout
    assert len(toc) > 2_000_000, "the premise: a table of contents of several MB"
    assert len(backup["tables"]) == TABLES + 3, "every table is in the archive and described"
    assert backup["verified"] is True
    made = sessions(shop) - before
    # The snapshot's figures took 253 connections to production when each table had its own.
    assert made < 60, f"{made} connections to production during the window"
    assert "Traceback" not in said


def test_tables_whose_names_read_alike_are_kept_apart(shop: Shop) -> None:
    execute(shop, 'CREATE SCHEMA a; CREATE TABLE a."b.c" (n int); INSERT INTO a."b.c" VALUES'
             ' (1), (2), (3); CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (n int);'
             ' INSERT INTO "a.b".c VALUES (7)')
    present = len(demo.fingerprint(shop.prod_url))

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    tables = shop.status()["backup"]["tables"]
    assert tables['a."b.c"']["rows"] == 3
    assert tables['"a.b".c']["rows"] == 1
    assert tables['a."b.c"']["checksum"] != tables['"a.b".c']["checksum"]
    assert len(tables) == present
    assert f"{present} tables, " in done.stdout + done.stderr, "the backup's summary"


MANY_SMALL = 450
BATCH = 10  # tables per figures query here, so that the figures take 45 batches


def test_the_figures_take_jobs_connections_each_holding_one_batch_of_locks(
        shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alongside pg_dump, the snapshot's figures come from ``[backup] jobs`` connections, not
    one a batch, and each connection holds the locks of one batch at a time (a transaction
    per batch importing the snapshot): counted from the server's own session counter, and
    sampled from pg_locks while the backup runs."""
    execute(shop, f"""DO $$ BEGIN FOR i IN 1..{MANY_SMALL} LOOP
        EXECUTE format('CREATE TABLE tenant_%s (id int PRIMARY KEY, v text)', i);
        EXECUTE format('INSERT INTO tenant_%s VALUES (1, %L)', i, i); END LOOP; END $$""")
    monkeypatch.setattr(figures, "BATCH_TABLES", BATCH)
    jobs = 2
    settings = make_settings(tmp_path, backup={"jobs": jobs})
    target = pg.Db.from_url(shop.prod_url)
    with Journal.open(tmp_path / ".window") as journal:
        ctx = Context(settings=settings, journal=journal, run_id="r1", target=target,
                      staging=target).for_phase("backup", time.time() + 300, lambda: None)
        peak = Peak(shop)
        with psycopg.connect(shop.prod_url, autocommit=False) as exporter:
            exporter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snapshot = str(exporter.execute("SELECT pg_export_snapshot()").fetchone()[0])
            tables = pg.user_tables(exporter)
            expected = figures.describe_tables(exporter, tables)
            major = pg.server_major(exporter)
            before = sessions(shop)
            with peak:
                _compress, found = dumps.dump_described(
                    ctx, tmp_path / "archive", major, tables, views=[], snapshot=snapshot)
            exporter.rollback()
    made = sessions(shop) - before

    assert found == expected, "the figures describe the exported snapshot"
    assert len(found) == MANY_SMALL + 3
    # pg_dump: a leader and `jobs` workers; the figures: one to plan the batches and `jobs`
    # workers. One connection a batch would have made 45 more.
    assert made <= (1 + jobs) + (1 + jobs), f"{made} connections for {len(found)} tables"
    assert peak.figures_pids and len(peak.figures_pids) <= jobs, peak.figures_pids
    # A table and its key's index each: a batch's worth, never the 450 tables' 900.
    assert 0 < peak.locks_per_worker <= 3 * BATCH, (
        f"a figures connection held {peak.locks_per_worker} relation locks at once")


class Peak:
    """While running: which sessions read the figures (their query hashes rows) and the most
    relation locks one of them held at once, sampled every few milliseconds."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.figures_pids: set[int] = set()
        self.locks_per_worker = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()

    def sample(self) -> None:
        with psycopg.connect(self.shop.cluster.url(), autocommit=True) as conn:
            while not self.done.is_set():
                rows = conn.execute(
                    "SELECT a.pid, (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid"
                    " AND l.locktype = 'relation' AND l.relation >= 16384)"
                    " FROM pg_stat_activity a WHERE a.datname = %s"
                    " AND a.query LIKE '%%hash_record_extended%%'",
                    (self.shop.prod_db,)).fetchall()
                for pid, locks in rows:
                    self.figures_pids.add(int(pid))
                    self.locks_per_worker = max(self.locks_per_worker, int(locks))
                time.sleep(0.002)
