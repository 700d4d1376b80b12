"""The window's own sessions on the server, seen in ``pg_stat_activity``: each pg tool and
command the window runs connects as ``window/<run id>/<phase>``. A test waits on these to
act at a known moment of a phase, instead of sleeping and hoping the moment has come."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster
from tests.support.shop import Shop
from tests.support.waiting import wait_until


@contextmanager
def idle_session(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another client's idle connection to a database (a pool's), kept open meanwhile."""
    conn = psycopg.connect(url, autocommit=True, application_name="pool")
    try:
        yield conn
    finally:
        conn.close()


def sessions(cluster: Cluster, phase: str, *, waiting: bool = False) -> int:
    """Sessions the window's commands opened in ``phase`` (those waiting on a lock)."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"
            " AND (NOT %s OR wait_event_type = 'Lock')", (f"window/%/{phase}", waiting)
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def backup_waiting(shop: Shop) -> Iterator[subprocess.Popen[str]]:
    """A window (``run``) whose backup's pg_dump is blocked, its session waiting on a lock
    the test holds on ``orders`` until the block ends."""
    locker = psycopg.connect(shop.prod_url)
    locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
    try:
        window = shop.start("run", "--confirm", demo.PHRASE)
        wait_until(lambda: sessions(shop.cluster, "backup", waiting=True),
                   "the backup's pg_dump waiting on the lock")
        yield window
    finally:
        locker.close()
