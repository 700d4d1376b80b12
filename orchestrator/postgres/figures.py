"""What a backup measures of a database: rows and a content checksum per table, in one
snapshot, and the write counters (with how long until they hold every commit): the proof that
a restored copy equals its backup, and the writes a rollback would discard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

import psycopg
from psycopg import sql

from orchestrator.postgres.pg import Table, user_tables


class TableFigures(TypedDict, total=False):
    """A table as the backup describes it: its rows, and (unless asked not to) a checksum."""

    rows: int
    checksum: str


class WriteCounters(TypedDict):
    """Rows inserted, updated and deleted per table, and the WAL position, as the
    statistics said at one moment; ``rewritten``, rows updated and deleted only (absent
    from a journal written before it was counted)."""

    wal_lsn: str | None
    tables: dict[str, int]
    rewritten: NotRequired[dict[str, int]]


# The write counters' name for the database's large objects (their data and their list).
LARGE_OBJECTS = "pg_catalog.pg_largeobject"
BATCH_TABLES = 200  # small tables described by one query
SMALL_BYTES = 8 * 1024 * 1024  # a table smaller than this goes into a batch


def describe_tables(conn: psycopg.Connection[Any], tables: list[Table] | None = None, *,
                    checksums: bool = True) -> dict[str, TableFigures]:
    """Rows and a content checksum per table, as ``{Table.qualified: {"rows", "checksum"}}``,
    in the connection's snapshot, one query per batch of ``batches``."""
    tables = user_tables(conn) if tables is None else tables
    by_text = hashed_as_text(conn, tables)
    found: dict[str, TableFigures] = {}
    for batch in batches(conn, tables):
        found.update(describe_batch(conn, batch, checksums=checksums, by_text=by_text))
    return found


def hashed_as_text(conn: psycopg.Connection[Any], tables: list[Table]) -> frozenset[int]:
    """The tables whose rows must be hashed as text: a value of an enum, or of a ``reg*``
    type, is stored (and hashed by ``hash_record_extended``) as an OID, which a restore
    changes; its text does not. Looked for through domains, arrays and composite types."""
    rows = conn.execute(_OID_VALUED, ([t.oid for t in tables],)).fetchall()
    return frozenset(int(oid) for (oid,) in rows)


_OID_VALUED = """
WITH RECURSIVE typ(oid, rel) AS (
    SELECT a.atttypid, a.attrelid FROM pg_attribute a
    WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT inner_type.oid, typ.rel FROM typ JOIN pg_type t ON t.oid = typ.oid
    CROSS JOIN LATERAL (
        SELECT t.typbasetype AS oid WHERE t.typtype = 'd'
      UNION ALL SELECT t.typelem WHERE t.typcategory = 'A' AND t.typelem <> 0
      UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE t.typtype = 'c'
                AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS inner_type
)
SELECT DISTINCT typ.rel::int8 FROM typ JOIN pg_type t ON t.oid = typ.oid
WHERE t.typtype = 'e' OR (t.typnamespace = 'pg_catalog'::regnamespace
                          AND t.typname LIKE 'reg%%')
"""


def batches(conn: psycopg.Connection[Any], tables: list[Table]) -> list[list[Table]]:
    """``tables`` in the order to describe them, largest first: each large table alone, the
    small ones (under ``SMALL_BYTES`` on disk) ``BATCH_TABLES`` to a query, so a schema of
    thousands of small tables costs dozens of queries, not thousands."""
    sizes = relation_sizes(conn, tables)
    ordered = sorted(tables, key=lambda t: -(sizes.get(t.oid) or 0))
    large = [[t] for t in ordered if (sizes.get(t.oid) or 0) >= SMALL_BYTES]
    small = [t for t in ordered if (sizes.get(t.oid) or 0) < SMALL_BYTES]
    return large + [small[i:i + BATCH_TABLES] for i in range(0, len(small), BATCH_TABLES)]


def relation_sizes(conn: psycopg.Connection[Any], tables: list[Table]) -> dict[int, int]:
    """Each table's size on disk (its main fork), by oid."""
    return {int(oid): int(size or 0) for oid, size in conn.execute(
        "SELECT t.oid::int8, pg_relation_size(t.oid) FROM unnest(%s::oid[]) AS t(oid)",
        ([t.oid for t in tables],)).fetchall()}


def describe_batch(conn: psycopg.Connection[Any], tables: list[Table], *,
                   checksums: bool = True, by_text: frozenset[int] = frozenset()
                   ) -> dict[str, TableFigures]:
    """The figures of ``tables`` from one query. The checksum sums a 64-bit hash of every row:
    it streams (no table-sized string), ignores row order, and two databases holding the same
    rows agree. hash_record_extended hashes the row's values directly, twice as fast as
    hashing its text; the tables in ``by_text`` (see ``hashed_as_text``) are hashed as text,
    and a batch holding a column type with no hash function (json, point) is described again
    table by table, such a table by its text."""
    if not checksums:
        return _figures(conn, tables, lambda _table: None)
    try:
        with conn.transaction():  # a savepoint when inside the snapshot's transaction
            return _figures(conn, tables,
                            lambda table: _BY_TEXT if table.oid in by_text else _BY_RECORD)
    except (psycopg.errors.UndefinedFunction, psycopg.errors.FeatureNotSupported):
        if len(tables) > 1:
            return {key: found for table in tables
                    for key, found in describe_batch(conn, [table], by_text=by_text).items()}
    return _figures(conn, tables, lambda _table: _BY_TEXT)


def _figures(conn: psycopg.Connection[Any], tables: list[Table],
             hash_row: Callable[[Table], sql.SQL | None]) -> dict[str, TableFigures]:
    """One ``UNION ALL`` query: rows and, where ``hash_row`` gives a hash, the checksum of
    each table."""
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::int, count(*), {}::text FROM {} AS t").format(
            sql.Literal(i), _summed(hash_row(table)), table.sql())
        for i, table in enumerate(tables))
    found: dict[str, TableFigures] = {}
    for i, rows, checksum in conn.execute(query).fetchall():
        figures: TableFigures = {"rows": int(rows)}
        if checksum is not None:
            figures["checksum"] = str(checksum)
        found[tables[i].qualified] = figures
    return found


def _summed(hash_row: sql.SQL | None) -> sql.Composable:
    return sql.SQL("NULL") if hash_row is None else (
        sql.SQL("coalesce(sum({}), 0)").format(hash_row))


_BY_RECORD = sql.SQL("hash_record_extended(t, 0)")
_BY_TEXT = sql.SQL("hashtextextended(t::text, 0)")


def write_counters(conn: psycopg.Connection[Any]) -> WriteCounters:
    """Rows inserted, updated and deleted so far per table (and in ``LARGE_OBJECTS``: a
    rollback discards those too), and the WAL position: taken twice,
    they tell which tables took writes in between, and which took updates or deletes (the
    statistics lag by about a second, and count the rows of aborted transactions too)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT format('%I.%I', schemaname, relname), n_tup_ins + n_tup_upd + n_tup_del,"
        " n_tup_upd + n_tup_del FROM pg_stat_user_tables UNION ALL SELECT '" + LARGE_OBJECTS +
        "', coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0), coalesce(sum(n_tup_upd"
        " + n_tup_del), 0) FROM pg_stat_sys_tables WHERE relid IN"
        " ('pg_largeobject'::regclass, 'pg_largeobject_metadata'::regclass)").fetchall()
    lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return {"wal_lsn": str(lsn[0]) if lsn else None,
            "tables": {str(name): int(n) for name, n, _ in rows},
            "rewritten": {str(name): int(n) for name, _, n in rows}}


def written(before: WriteCounters, after: WriteCounters) -> dict[str, int] | None:
    """Rows written per table from ``before`` to ``after`` (those that took any), by name;
    None where a counter went down: statistics reset, or lost in a crash."""
    counts = {t: n - before["tables"].get(t, 0) for t, n in after["tables"].items()}
    if any(n < 0 for n in counts.values()):
        return None
    return {t: n for t, n in sorted(counts.items()) if n > 0}


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
