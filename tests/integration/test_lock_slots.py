"""A schema wider than the server's lock table: the backup says which setting to raise.

``pg_dump`` locks every table it dumps in one transaction. On a server whose lock table is
smaller than the schema, PostgreSQL says only "out of shared memory"; the window stops at the
backup with one sentence naming ``max_locks_per_transaction`` and a value for it. The server
here is the test's own, its lock table made small, so the other tests never feel it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.postgres import lock_slots
from orchestrator.postgres.cluster import Cluster
from tests.support.shop import Shop

TABLES = 1000
BATCH = 50  # tables made per transaction: the small lock table holds a few hundred locks


@pytest.fixture
def small_lock_table() -> Iterator[Cluster]:
    server = Cluster().init()
    with (server.data / "postgresql.conf").open("a") as conf:
        # The lock table holds max_locks_per_transaction x (connections, workers and WAL
        # senders): the suite's replication settings made small again too.
        conf.write("max_locks_per_transaction = 10\nmax_connections = 20\n"
                   "max_wal_senders = 0\nmax_replication_slots = 0\n"
                   "max_worker_processes = 8\nmax_logical_replication_workers = 4\n")
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def test_a_dump_out_of_lock_slots_names_the_setting_and_a_value(
        small_lock_table: Cluster, tmp_path: Path) -> None:
    cluster = small_lock_table
    staging_url = demo.create_shop(cluster, "wide_staging")
    prod_url = demo.create_shop(cluster, "wide")
    with psycopg.connect(prod_url, autocommit=True) as conn:
        for first in range(1, TABLES + 1, BATCH):
            conn.execute("".join(f"CREATE TABLE tenant_{i} (id int PRIMARY KEY);"
                                 for i in range(first, first + BATCH)))  # type: ignore[arg-type]
    shop = Shop(cluster, tmp_path / "project", "wide", "wide_staging", prod_url, staging_url)
    shop.configure()

    done = shop.run_window(timeout=300)

    said = done.stdout + done.stderr
    assert done.returncode == 3, said
    assert "ran out of the server's lock table" in said, said
    settings = lock_slots.LockSettings(10, 20, 0)
    found = re.search(r"each of the ([\d,]+) tables.*max_locks_per_transaction = (\d+)", said)
    assert found, said
    assert int(found.group(1).replace(",", "")) >= TABLES
    advised = int(found.group(2))
    assert advised == lock_slots.advised(settings, int(found.group(1).replace(",", "")))
    assert advised * settings.sessions > TABLES, "the advice makes room for every table"
    assert "Traceback" not in said
