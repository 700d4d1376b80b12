"""Who may drive a window: one process per state folder, one window per target database.

The state folder lock is an ``flock`` held for the life of the process (the kernel drops it
when the process dies, however it dies). The target lock is a PostgreSQL advisory lock taken
on the server's maintenance database, so two engineers on two laptops cannot run windows
against the same database; it too dies with its session.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import psycopg

from orchestrator import pg
from orchestrator.errors import GateRefused, PhaseFailed


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

    def acquire(self) -> None:
        if not self.try_acquire():
            raise GateRefused(
                f"another window is running from {self.path.parent} (pid {self.holder()});"
                " use `window status` to follow it or `window abort` to stop it."
            )

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TargetLock:
    """``pg_try_advisory_lock`` on the maintenance database, keyed by the target's name."""

    def __init__(self, target: pg.Db, maintenance_db: str) -> None:
        self._target = target
        self._maintenance = target.on(maintenance_db)
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self, deadline: float) -> None:
        try:
            conn = pg.connect(self._maintenance, deadline)
        except PhaseFailed as exc:
            raise GateRefused(f"{exc.message}; nothing was done.") from exc
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                           (f"window:{self._target.dbname}",)).fetchone()
        if not (row and row[0]):
            conn.close()
            raise GateRefused(f"another window holds {self._target}; nothing was done.")
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
