"""Who may drive a window: one process per state folder, one window per target database
(with the S3 state backend, also one runner per shared state: orchestrator.store.lease).

The state folder lock is an ``flock`` held for the life of the process (the kernel drops it
when the process dies, however it dies). The target lock is a PostgreSQL advisory lock taken
on the server's maintenance database, so two engineers on two laptops cannot run windows
against the same database; it too dies with its session.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog

from orchestrator.errors import Busy, GateRefused, LeaseLost, PhaseFailed
from orchestrator.postgres import pg


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


TAKE_OVER_SECONDS = 10.0
KEEP_SECONDS = 1.0  # how often a running window makes sure it still holds the target's lock


class TargetLock:
    """``pg_try_advisory_lock`` on the maintenance database, keyed by the target's name."""

    def __init__(self, target: pg.Db, maintenance_db: str) -> None:
        self._target = target
        self._maintenance = target.on(maintenance_db)
        self._conn: psycopg.Connection[Any] | None = None
        self._key = f"window:{target.dbname}"
        self._next_keep = 0.0

    def acquire(self, deadline: float, *, take_over: bool = False) -> None:
        """``take_over``: the lock's holder lost the window's lease (it expired or was
        broken); its session is ended so that the lock passes to this process."""
        try:
            conn = pg.connect(self._maintenance, deadline)
        except PhaseFailed as exc:
            raise GateRefused(f"{exc.message}; nothing was done.") from exc
        key = self._key
        end = time.time() + TAKE_OVER_SECONDS
        while not _try_lock(conn, key):
            if not take_over or time.time() > min(end, deadline):
                conn.close()
                raise Busy(f"another window holds {self._target}; nothing was done.")
            ended = conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_locks WHERE locktype ="
                " 'advisory' AND objsubid = 1 AND granted AND database = (SELECT oid FROM"
                " pg_database WHERE datname = current_database()) AND ((classid::bigint << 32)"
                " | objid::bigint) = hashtext(%s)::bigint", (key,)).fetchall()
            structlog.get_logger().warning("target_lock_taken_over",
                                           ended=[row[0] for row in ended])
            time.sleep(0.1)
        self._conn = conn

    def check(self) -> None:
        """Still held; taken again once the server dropped the session holding it (a
        restart, a failover): every ``KEEP_SECONDS`` the session is asked a trivial query;
        when it is gone, one connection attempt takes the lock again (the next call retries
        while the server is down). LeaseLost if another window took the target meanwhile:
        this one must stop acting on it."""
        now = time.monotonic()
        if now < self._next_keep:
            return
        self._next_keep = now + KEEP_SECONDS
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
            else:
                return
        try:
            conn = pg.connect(self._maintenance, time.time())  # one attempt
        except PhaseFailed:
            return
        if not _try_lock(conn, self._key):
            conn.close()
            raise LeaseLost(f"the server dropped this window's lock on {self._target} and"
                            " another window took it; this one stopped (`window resume`"
                            " continues once that one is done).")
        self._conn = conn
        structlog.get_logger().warning("target_lock_taken_again", target=str(self._target))

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _try_lock(conn: psycopg.Connection[Any], key: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
    return bool(row and row[0])
