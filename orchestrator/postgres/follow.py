"""The standby follows production: the window's own publications, logical slot and
subscription, so that a rollback gives back every write made after the backup's snapshot.

Publications come first (a slot decodes only what was published when it reads it), one that
publishes every operation for the tables that have a replica identity and one that publishes
inserts only for the tables without one: publishing UPDATE or DELETE for a table without a
replica identity makes those statements FAIL on production. Then, over a replication
connection, the slot, which exports the snapshot the dump reads: archive and slot start at the
same point. Once the standby is restored and proven, a subscription in it (``create_slot =
false``, ``copy_data = false``) replays what production committed since. Once production is
drained behind the banner, the subscription has applied production's current position, it
is detached and dropped, then the slot and the publications; sequences are not replicated,
so their values are copied.

Every name is ``window_<run_id>`` (``window_<YYYYMMDD>_<HHMMSS>_<hex4>``, the inserts-only
publication with ``_inserts``), so what an earlier window left behind is found by its name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from orchestrator.postgres import pg

NAME = re.compile(r"window_\d{8}_\d{6}_[0-9a-f]{4}(?:_inserts)?")
SLOT_DROP_SECONDS = 10.0  # a walsender leaves within moments of its subscription's detach


class Names(NamedTuple):
    slot: str
    subscription: str
    publications: tuple[str, str]  # every operation; inserts only


def names(run_id: str) -> Names:
    base = f"window_{run_id}"
    return Names(base, base, (base, f"{base}_inserts"))


class Slot(NamedTuple):
    name: str
    lsn: str  # where decoding starts: the snapshot's position
    snapshot: str  # exported while the replication connection stays idle


def why_not(conn: psycopg.Connection[Any]) -> str | None:
    """Why production cannot be followed by this role, in words; None when it can."""
    row = conn.execute(
        "SELECT current_setting('wal_level'), r.rolsuper, r.rolreplication,"
        " current_setting('server_version_num')::int, (SELECT count(*) FROM"
        " pg_replication_slots), current_setting('max_replication_slots')::int"
        " FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    if row is None:
        return "this role is not in pg_roles"
    wal_level, superuser, replication, version, used, slots = row
    reasons = [
        (wal_level != "logical", f"wal_level is {wal_level} on production, not logical"),
        (not (superuser or replication),
         "this role has no REPLICATION attribute (ALTER ROLE ... REPLICATION)"),
        (not superuser and version < 160000,
         "this role may not create a subscription in the standby (superuser only before"
         " PostgreSQL 16)"),
        (used >= slots, f"every replication slot is in use (max_replication_slots = {slots})"),
    ]
    if said := next((words for failed, words in reasons if failed), None):
        return said
    if not superuser and not _member_of(conn, "pg_create_subscription"):
        return "this role may not create a subscription (GRANT pg_create_subscription)"
    if not superuser and (others := _unowned_tables(conn)):
        return f"this role does not own {others} table(s), and only an owner may publish one"
    return None


def _member_of(conn: psycopg.Connection[Any], role: str) -> bool:
    row = conn.execute("SELECT pg_has_role(current_user, oid, 'USAGE') FROM pg_roles"
                       " WHERE rolname = %s", (role,)).fetchone()
    return bool(row and row[0])


def _unowned_tables(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND " +
        pg.own_objects("pg_class", "c") +
        " AND NOT pg_has_role(current_user, c.relowner, 'USAGE')").fetchone()
    return int(row[0]) if row else 0


def publishable(conn: psycopg.Connection[Any]) -> tuple[list[pg.Table], list[pg.Table]]:
    """The tables to publish whole (they have a replica identity) and those to publish for
    inserts only (none: no primary key, no REPLICA IDENTITY index or FULL). Unlogged tables
    cannot be published, and are in neither."""
    rows = conn.execute(
        "SELECT c.oid::int8, n.nspname, c.relname, " + pg.QUALIFIED + ", c.relreplident = 'f'"
        " OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid ="
        " c.oid AND i.indisprimary)) OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM"
        " pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND " +
        pg.own_objects("pg_class", "c") + " ORDER BY 2, 3").fetchall()
    whole = [pg.Table(*row[:4]) for row in rows if row[4]]
    inserts = [pg.Table(*row[:4]) for row in rows if not row[4]]
    return whole, inserts


def create_publications(conn: psycopg.Connection[Any], run_id: str) -> list[str]:
    """This run's publications on production (dropped first: a step entered again); their
    names."""
    drop_publications(conn, run_id)
    whole, inserts = publishable(conn)
    made = []
    for name, tables, only in zip(names(run_id).publications, (whole, inserts),
                                  ("", "insert"), strict=True):
        if not tables:
            continue
        statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), sql.SQL(", ").join(t.sql() for t in tables))
        if only:
            statement += sql.SQL(" WITH (publish = {})").format(sql.Literal(only))
        conn.execute(statement)
        made.append(name)
    return made


def replayed_by_key(conn: psycopg.Connection[Any], run_id: str) -> set[str]:
    """The tables this run publishes for every operation whose rows the subscriber finds by
    a unique key (a primary key or a REPLICA IDENTITY index, not FULL: that one matches a
    row by equality of every column, and equal is not identical), by ``Table.qualified``."""
    return {str(name) for (name,) in conn.execute(sql.SQL(
        "SELECT format('%I.%I', p.schemaname, p.tablename) FROM pg_publication_tables p"
        " JOIN pg_namespace n ON n.nspname = p.schemaname JOIN pg_class c ON c.relnamespace"
        " = n.oid AND c.relname = p.tablename WHERE p.pubname = {} AND c.relreplident IN"
        " ('d', 'i')").format(sql.Literal(names(run_id).publications[0]))).fetchall()}


def published(conn: psycopg.Connection[Any], run_id: str) -> set[str]:
    """The tables in this run's publications (for every operation or inserts only), by
    ``Table.qualified``: each INSERT committed to them reaches the subscriber."""
    return {str(name) for (name,) in conn.execute(sql.SQL(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_publication_tables"
        " WHERE pubname IN ({})").format(sql.SQL(", ").join(
            map(sql.Literal, names(run_id).publications)))).fetchall()}


STATS_IDLE_SECONDS = 10.0  # PGSTAT_IDLE_INTERVAL: an idle session's counters, at the latest


def quiet_since(conn: psycopg.Connection[Any], since: str, before: float = 0.0) -> bool:
    """Whether every other session of this database has been idle since ``before`` seconds
    before the server's clock read ``since``: none can have committed anything since (a
    commit happens while a session is active), and with ``STATS_IDLE_SECONDS`` the write
    counters hold every commit (a session reports at most once a second, then once idle
    that long, or as it ends). One this role may not look into is not known to be idle;
    the window's own sessions (``window/...``) write no table."""
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND coalesce(backend_type, 'client backend') NOT IN"
        " ('walsender', 'autovacuum worker') AND NOT starts_with(coalesce(application_name,"
        " ''), 'window/') AND (state IS DISTINCT FROM 'idle' OR state_change IS NULL OR"
        " state_change >= %s::timestamptz - make_interval(secs => %s)))",
        (since, before)).fetchone()
    return bool(row and row[0])


def fires_on_apply(conn: psycopg.Connection[Any]) -> bool:
    """Whether a trigger of the database ``conn`` is on fires when a subscription applies a
    change (ENABLE ALWAYS or REPLICA): it may write any table there, replicated or not."""
    return conn.execute("SELECT 1 FROM pg_trigger WHERE tgenabled IN ('A', 'R') AND NOT"
                        " tgisinternal LIMIT 1").fetchone() is not None


def files(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The file (``relfilenode``) of each table, as the transaction's snapshot sees it: a
    TRUNCATE, which no write counter shows, gives a table a new one."""
    return {str(name): int(node) for name, node in conn.execute(
        "SELECT " + pg.QUALIFIED + ", c.relfilenode::int8 FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND " +
        pg.own_objects("pg_class", "c")).fetchall()}


def drop_publications(conn: psycopg.Connection[Any], run_id: str) -> list[str]:
    """This run's publications dropped from the database ``conn`` is on; those that were
    there."""
    found = [name for name in names(run_id).publications if conn.execute(
        "SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()]
    for name in found:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    return found


@contextmanager
def slot_with_snapshot(db: pg.Db, name: str, deadline: float) -> Iterator[Slot]:
    """The logical slot ``name``, created over a replication connection that exports its
    snapshot; the snapshot stays importable (``pg_dump --snapshot``, ``SET TRANSACTION
    SNAPSHOT``) until this block ends."""
    replication = pg.Db(db.url, {**db.params, "replication": "database"}, db.schema)
    with pg.connect(replication, deadline) as conn:
        result = conn.pgconn.exec_(sql.SQL(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
                sql.Identifier(name)).as_bytes(conn))
        if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            raise psycopg.OperationalError(
                (result.error_message or b"").decode(errors="replace").strip()
                or "CREATE_REPLICATION_SLOT failed")
        lsn, snapshot = (bytes(result.get_value(0, i) or b"").decode() for i in (1, 2))
        yield Slot(name, lsn, snapshot)


def slot_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                        (name,)).fetchone() is not None


def drop_slot(conn: psycopg.Connection[Any], name: str) -> bool:
    """Drop the slot ``name``, ending the walsender that still reads it; whether it was
    there."""
    end = time.monotonic() + SLOT_DROP_SECONDS
    while True:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (name,)).fetchone()
        if row is None:
            return False
        if row[0] is not None:
            with suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        except psycopg.errors.ObjectInUse:
            if time.monotonic() >= end:
                raise
            time.sleep(0.1)
            continue
        except psycopg.errors.UndefinedObject:
            return False
        return True


def source_conninfo(db: pg.Db) -> str:
    """How the standby's subscription reaches production: the window's own connection
    parameters (the server itself connects, as this role)."""
    return make_conninfo(**{k: v for k, v in db.params.items() if k != "options"})


def subscribe(conn: psycopg.Connection[Any], run_id: str, source: str,
              publications: list[str]) -> None:
    """In the standby ``conn`` is on: this run's subscription to the slot created with the
    dump (dropped first: a step entered again)."""
    unsubscribe(conn, run_id)
    # synchronous_commit on: the position the subscriber confirms is what it has applied,
    # at once; off (a subscription's default), it lags by up to a second of its wake-ups,
    # which users would wait through behind the banner.
    conn.execute(sql.SQL(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false,"
        " slot_name = {}, copy_data = false, synchronous_commit = on)").format(
            sql.Identifier(names(run_id).subscription), sql.Literal(source),
            sql.SQL(", ").join(map(sql.Identifier, publications)),
            sql.Literal(names(run_id).slot)))


def unsubscribe(conn: psycopg.Connection[Any], run_id: str) -> bool:
    """This run's subscription, detached from its slot and dropped (the slot is dropped on
    production, not through the subscription); whether it was there."""
    name = sql.Identifier(names(run_id).subscription)
    if not conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s AND subdbid ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())",
                        (names(run_id).subscription,)).fetchone():
        return False
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
    conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))
    return True


def subscription_database(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    row = conn.execute("SELECT d.datname FROM pg_subscription s JOIN pg_database d ON d.oid ="
                       " s.subdbid WHERE s.subname = %s",
                       (names(run_id).subscription,)).fetchone()
    return str(row[0]) if row else None


def current_lsn(conn: psycopg.Connection[Any]) -> str:
    """A WAL position past every transaction committed so far, flushed: the walsender sends
    only flushed WAL, and a commit made with ``synchronous_commit = off`` waits in WAL
    buffers for up to three ``wal_writer_delay`` (the write position can stand before it).
    A transaction that wrote WAL, committed synchronously, flushes everything before it; one
    that only took an id wrote none, and commits asynchronously whatever the setting. So it
    writes a logical message (executable by anyone; a subscription replays none: pgoutput
    sends messages only to a consumer that asks for them)."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'window', '')")
    row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def lag_bytes(conn: psycopg.Connection[Any], slot: str, target: str) -> int | None:
    """How far the slot's subscriber has yet to confirm (applied and flushed) before
    ``target``; 0 once there, None when the slot is gone."""
    row = conn.execute("SELECT greatest(pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn), 0)"
                       " FROM pg_replication_slots WHERE slot_name = %s",
                       (target, slot)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def sequence_values(conn: psycopg.Connection[Any]) -> list[tuple[str, int | None]]:
    """Every sequence this role may read, with its last value (None: never called)."""
    return [(str(name), None if value is None else int(value)) for name, value in conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
        " WHERE has_sequence_privilege(format('%I.%I', schemaname, sequencename), 'SELECT')"
        " ORDER BY 1").fetchall()]


def set_sequences(conn: psycopg.Connection[Any], values: list[tuple[str, int | None]]) -> None:
    """The standby's sequences set to production's values (one that was never called there
    starts over, uncalled)."""
    for name, value in values:
        if value is None:
            conn.execute("SELECT setval(%s::regclass, seqstart, false) FROM pg_sequence"
                         " WHERE seqrelid = %s::regclass", (name, name))
        else:
            conn.execute("SELECT setval(%s::regclass, %s, true)", (name, value))


def schema_digest(conn: psycopg.Connection[Any]) -> str:
    """A digest of the tables and their columns: a change between the snapshot and the banner
    is DDL the subscription does not replay."""
    row = conn.execute(
        "SELECT md5(coalesce(string_agg(format('%s.%s:%s:%s:%s', n.nspname, c.relname,"
        " a.attname, format_type(a.atttypid, a.atttypmod), c.relreplident), ',' ORDER BY"
        " n.nspname, c.relname, a.attnum), '')) FROM pg_class c JOIN pg_namespace n ON"
        " n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
        " AND NOT a.attisdropped WHERE c.relkind IN ('r', 'p') AND " +
        pg.own_objects("pg_class", "c")).fetchone()
    return str(row[0]) if row else ""


class Leftover(NamedTuple):
    kind: str  # "slot", "publication", "subscription"
    name: str
    database: str

    def drop_sql(self) -> str:
        """The statement that drops it, run in ``database``."""
        if self.kind == "slot":
            return f"SELECT pg_drop_replication_slot('{self.name}')"
        if self.kind == "publication":
            return f'DROP PUBLICATION "{self.name}"'
        return (f'ALTER SUBSCRIPTION "{self.name}" DISABLE; ALTER SUBSCRIPTION "{self.name}"'
                f' SET (slot_name = NONE); DROP SUBSCRIPTION "{self.name}"')

    def words(self) -> str:
        return (f"{self.kind} {self.name} on {self.database}: in {self.database},"
                f" {self.drop_sql()}")


def leftovers(conn: psycopg.Connection[Any], keep: str | None = None) -> list[Leftover]:
    """The window's slots and subscriptions on the cluster, and its publications in the
    database ``conn`` is on, but those of the run ``keep``."""
    rows = conn.execute(
        "SELECT 'slot', slot_name::text, coalesce(database::text, '') FROM pg_replication_slots"
        " UNION ALL SELECT 'subscription', s.subname::text, d.datname::text FROM"
        " pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        " UNION ALL SELECT 'publication', pubname::text, current_database()::text"
        " FROM pg_publication ORDER BY 1, 2").fetchall()
    kept = set(names(keep).publications) if keep else set()
    return [Leftover(*row) for row in rows
            if NAME.fullmatch(row[1]) and row[1] not in kept]
