"""What a backup measures of a database: rows and a content checksum per table, in one
snapshot, and the write counters (with how long until they hold every commit): the proof that
a restored copy equals its backup, and the writes a rollback would discard."""

from __future__ import annotations

from typing import Any, TypedDict

import psycopg
from psycopg import sql

from orchestrator.postgres.pg import Table, user_tables


class TableFigures(TypedDict, total=False):
    """A table as the backup describes it: its rows, and (unless asked not to) a checksum."""

    rows: int
    checksum: str


class WriteCounters(TypedDict):
    """Rows inserted, updated and deleted per table, and the WAL position, as the
    statistics said at one moment."""

    wal_lsn: str | None
    tables: dict[str, int]


def describe_tables(conn: psycopg.Connection[Any], tables: list[Table] | None = None
                    ) -> dict[str, TableFigures]:
    """Rows and a content checksum per table, as ``{"schema.table": {"rows", "checksum"}}``,
    in the connection's snapshot. The checksum sums a 64-bit hash of every row: it streams (no
    table-sized string), ignores row order, and two databases holding the same rows agree."""
    return {table.qualified: describe_table(conn, table)
            for table in (user_tables(conn) if tables is None else tables)}


def describe_table(conn: psycopg.Connection[Any], table: Table, *, checksums: bool = True
                   ) -> TableFigures:
    if not checksums:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.sql())).fetchone()
        return {"rows": int(row[0]) if row else 0}
    # hash_record_extended hashes the row's values directly, twice as fast as hashing its
    # text; a column type with no hash function (json, point) falls back to the text.
    try:
        with conn.transaction():  # a savepoint when inside the snapshot's transaction
            row = conn.execute(_CHECKSUM.format(hash=_BY_RECORD, table=table.sql())).fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.FeatureNotSupported):
        row = conn.execute(_CHECKSUM.format(hash=_BY_TEXT, table=table.sql())).fetchone()
    rows, checksum = (int(row[0]), str(row[1])) if row else (0, "0")
    return {"rows": rows, "checksum": checksum}


_CHECKSUM = sql.SQL("SELECT count(*), coalesce(sum({hash}), 0)::text FROM {table} AS t")
_BY_RECORD = sql.SQL("hash_record_extended(t, 0)")
_BY_TEXT = sql.SQL("hashtextextended(t::text, 0)")


def write_counters(conn: psycopg.Connection[Any]) -> WriteCounters:
    """Rows inserted, updated and deleted so far per table, and the WAL position: taken twice,
    they tell which tables took writes in between (the statistics lag by about a second)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del"
        " FROM pg_stat_user_tables").fetchall()
    lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return {"wal_lsn": str(lsn[0]) if lsn else None,
            "tables": {str(name): int(n) for name, n in rows}}


def stats_settle_wait(conn: psycopg.Connection[Any], settle: float) -> float:
    """How long to wait before the write counters hold every commit made so far: a session
    reports its counters within about ``settle`` of going idle (and at once when it ends), so
    only sessions of this database busy now or within ``settle`` keep the window waiting.
    The window's own sessions write nothing here."""
    row = conn.execute(
        "SELECT coalesce(max(CASE WHEN state = 'active' THEN %(settle)s ELSE %(settle)s"
        " - extract(epoch FROM clock_timestamp() - state_change) END), 0)::float8"
        " FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        " AND NOT starts_with(coalesce(application_name, ''), 'window/')",
        {"settle": settle}).fetchone()
    return max(0.0, float(row[0])) if row else settle
