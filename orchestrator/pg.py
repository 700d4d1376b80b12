"""PostgreSQL from the window's side: who a URL points at, bounded connects, catalog work.

A ``Db`` never renders its password: ``str(db)`` is ``host:port/dbname``. Subprocesses get the
connection through libpq's environment variables, never their argv (``ps`` shows argv to
every user on the machine).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.errors import PhaseFailed
from orchestrator.redact import redact

CONNECT_ATTEMPT_SECONDS = 5
# libpq keyword -> environment variable, for the keywords a URL can carry.
_LIBPQ_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "password": "PGPASSWORD", "passfile": "PGPASSFILE",
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "options": "PGOPTIONS", "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "channel_binding": "PGCHANNELBINDING", "gssencmode": "PGGSSENCMODE",
}


@dataclass(frozen=True)
class Db:
    url: str = field(repr=False)
    params: dict[str, Any] = field(repr=False)

    @classmethod
    def from_url(cls, url: str) -> Db:
        return cls(url, conninfo_to_dict(url))

    @property
    def dbname(self) -> str:
        return str(self.params.get("dbname") or self.params.get("user") or "postgres")

    @property
    def host(self) -> str:
        return str(self.params.get("host") or "localhost")

    @property
    def port(self) -> str:
        return str(self.params.get("port") or "5432")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    def on(self, dbname: str) -> Db:
        """The same server and credentials, another database."""
        params = {**self.params, "dbname": dbname}
        return Db(make_conninfo(**params), params)

    def conninfo(self) -> str:
        return make_conninfo(**{**self.params, "connect_timeout": CONNECT_ATTEMPT_SECONDS})

    def libpq_env(self) -> dict[str, str]:
        env = {_LIBPQ_ENV[k]: str(v) for k, v in self.params.items() if k in _LIBPQ_ENV}
        env.setdefault("PGDATABASE", self.dbname)
        return env


# Every connection the window opens, so that a signal can cancel whatever query is running.
_open: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def cancel_running_queries() -> None:
    """Ask the server to cancel the query in flight on each open connection (idle: no-op)."""
    for conn in list(_open):
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)


def connect(db: Db, deadline: float, *, autocommit: bool = True,
            poll: Callable[[], None] = lambda: None) -> psycopg.Connection[Any]:
    """Connect, retrying with backoff until ``deadline``; then one clear PhaseFailed.

    Serverless PostgreSQL can take minutes to wake, so one refused attempt proves nothing.
    """
    delay, attempts = 0.5, 0
    while True:
        attempts += 1
        try:
            conn = psycopg.connect(db.conninfo(), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            last = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
            if time.time() + delay >= deadline:
                raise PhaseFailed(
                    f"cannot reach {db} after {attempts} attempt(s): {last}"
                ) from exc
        else:
            _open.add(conn)
            return conn
        poll()
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def server_major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version // 10000)


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(schema, name) for schema, name in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
        " ORDER BY 1, 2"
    ).fetchall()]


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per user table, as ``schema.table``, in the connection's current snapshot."""
    counts: dict[str, int] = {}
    for schema, name in user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name))
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{name}"] = int(row[0]) if row else 0
    return counts


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
        is not None


def terminate_sessions(conn: psycopg.Connection[Any], *, dbname: str | None = None,
                       application_name: str | None = None) -> int:
    """End other sessions on a database or with an application name; how many were ended."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND (%(db)s::text IS NULL OR datname = %(db)s)"
        " AND (%(app)s::text IS NULL OR application_name = %(app)s)",
        {"db": dbname, "app": application_name},
    ).fetchall()
    return len(rows)


def set_allow_connections(conn: psycopg.Connection[Any], name: str, allow: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")))


def rename_database(conn: psycopg.Connection[Any], old: str, new: str, deadline: float) -> None:
    """Rename ``old`` to ``new``: block new sessions, end the rest, retry while some linger."""
    set_allow_connections(conn, old, allow=False)
    while True:
        terminate_sessions(conn, dbname=old)
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old), sql.Identifier(new)))
            break
        except psycopg.errors.ObjectInUse:
            if time.time() >= deadline:
                raise
            time.sleep(0.2)
    set_allow_connections(conn, new, allow=True)


def create_database_like(conn: psycopg.Connection[Any], name: str, like: str) -> None:
    """An empty database with the owner, encoding and locale of ``like``."""
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype"
        " FROM pg_database WHERE datname = %s", (like,)
    ).fetchone()
    if row is None:
        raise PhaseFailed(f"database {like!r} does not exist")
    owner, encoding, collate, ctype = row
    conn.execute(sql.SQL(
        "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
    ).format(sql.Identifier(name), sql.Identifier(owner), sql.Literal(encoding),
             sql.Literal(collate), sql.Literal(ctype)))


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))


def fingerprints(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Rows and an md5 of every row's text, per user table: equal means equal contents."""
    result: dict[str, tuple[int, str]] = {}
    for schema, name in user_tables(conn):
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
            " FROM {}.{} AS t").format(sql.Identifier(schema), sql.Identifier(name))
        row = conn.execute(query).fetchone()
        result[f"{schema}.{name}"] = (int(row[0]), str(row[1])) if row else (0, "")
    return result
