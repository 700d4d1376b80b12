"""The server's lock table, and what to say when a program ran out of it.

``pg_dump`` holds a lock on every table it dumps until it ends, in one transaction. The
server keeps every lock of every session in one shared table, sized at start-up for about
``max_locks_per_transaction * (max_connections + max_prepared_transactions)`` locks; a
schema with more tables than that (a schema per tenant, 10,000 tables) makes the dump fail
with PostgreSQL's bare "out of shared memory". ``explain`` turns that into one sentence with
the setting to raise and a value computed from the number of tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

SIGN = "out of shared memory"
STEP = 64  # the setting's default, and the step the advice rounds up to


@dataclass(frozen=True)
class LockSettings:
    """The three settings that size the lock table."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int

    @property
    def slots(self) -> int:
        """About how many locks the table holds, all sessions together."""
        return self.max_locks_per_transaction * self.sessions

    @property
    def sessions(self) -> int:
        return self.max_connections + self.max_prepared_transactions


def read(conn: psycopg.Connection[Any]) -> LockSettings:
    row = conn.execute(
        "SELECT current_setting('max_locks_per_transaction')::int,"
        " current_setting('max_connections')::int,"
        " current_setting('max_prepared_transactions')::int").fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM returns its row
        raise psycopg.DataError("the lock settings did not read")
    return LockSettings(*(int(value) for value in row))


def advised(settings: LockSettings, tables: int) -> int:
    """A ``max_locks_per_transaction`` whose lock table holds one lock on each of ``tables``
    on top of what every session may take today, rounded up to a multiple of 64."""
    wanted = settings.max_locks_per_transaction + math.ceil(tables / max(settings.sessions, 1))
    return max(STEP, math.ceil(wanted / STEP) * STEP)


def ran_out(output: str) -> bool:
    """Whether a program's output says the server's lock table was full."""
    return SIGN in output


def explain(program: str, tables: int, settings: LockSettings) -> str:
    """One sentence: why ``program`` ran out of the lock table, and what to set instead."""
    return (f"{program} ran out of the server's lock table: it locks each of the {tables:,}"
            f" tables it works on, and max_locks_per_transaction"
            f" {settings.max_locks_per_transaction} x (max_connections"
            f" {settings.max_connections} + max_prepared_transactions"
            f" {settings.max_prepared_transactions}) leaves room for about"
            f" {settings.slots:,} locks in all; set max_locks_per_transaction ="
            f" {advised(settings, tables)} (or more) in postgresql.conf and restart the server"
            f" (on a managed service, in its parameter group).")
