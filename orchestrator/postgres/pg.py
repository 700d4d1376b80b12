"""PostgreSQL from the window's side: who a URL points at, bounded connects, catalog work.

A ``Db`` never renders its password: ``str(db)`` is ``host:port/dbname``. Subprocesses get the
connection through libpq's environment variables, never their argv (``ps`` shows argv to
every user on the machine).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, LiteralString, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.errors import PhaseFailed
from orchestrator.redact import redact, register

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



# Query parameters Prisma reads from DATABASE_URL that libpq would refuse.
PRISMA_ONLY_PARAMETERS = frozenset({
    "schema", "connection_limit", "pool_timeout", "socket_timeout", "pgbouncer",
    "statement_cache_size", "sslidentity", "sslpassword", "sslaccept",
})


@dataclass(frozen=True)
class Db:
    url: str = field(repr=False)
    params: dict[str, Any] = field(repr=False)
    schema: str | None = None  # Prisma's ?schema=, where its _prisma_migrations table lives

    @classmethod
    def from_url(cls, url: str) -> Db:
        """The database a URL names. The URL itself is handed on unchanged (the migration
        tool may need its own parameters); libpq gets it without Prisma's, with Prisma's
        schema as its search_path. ValueError for a URL through a transaction pooler."""
        base, mark, query = url.partition("?")
        if not mark or not base.startswith(("postgres://", "postgresql://")):
            return cls(url, conninfo_to_dict(url))
        pairs = [pair for pair in query.split("&") if pair]
        prisma = {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, _, v
                  in (pair.partition("=") for pair in pairs) if k in PRISMA_ONLY_PARAMETERS}
        kept = "&".join(p for p in pairs if p.partition("=")[0] not in PRISMA_ONLY_PARAMETERS)
        params = conninfo_to_dict(f"{base}?{kept}" if kept else base)
        if prisma.get("pgbouncer") == "true":
            raise ValueError("it goes through PgBouncer (pgbouncer=true), where the window's"
                             " session locks do not hold; give window the direct URL"
                             " (Prisma's directUrl)")
        schema = prisma.get("schema") or None
        if schema:  # as Prisma sets it for its own sessions: the checks' queries see the same
            bound = f"-c search_path={_options_value(schema)}"
            params["options"] = f"{params.get('options', '')} {bound}".strip()
        return cls(url, params, schema)

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
        return Db(make_conninfo(**params), params, self.schema)

    def conninfo(self, statement_timeout: float | None = None) -> str:
        params = {**self.params, "connect_timeout": CONNECT_ATTEMPT_SECONDS}
        if statement_timeout is not None:
            # The window's own SQL must not outlive its phase, lock waits included.
            bound = f"-c statement_timeout={max(1000, int(statement_timeout * 1000))}"
            params["options"] = f"{params.get('options', '')} {bound}".strip()
        return make_conninfo(**params)

    def named_by(self, value: str) -> bool:
        """Whether an environment value is a URL of this database (same server, same
        database), whatever its parameters."""
        if not value.startswith(("postgres://", "postgresql://")):
            return False
        try:
            return str(Db.from_url(value)) == str(self)
        except (psycopg.Error, ValueError):
            return False

    def url_with_options(self, extra: str) -> str:
        """The URL as given, with ``extra`` (``-c name=value ...``) added to its ``options``
        parameter: libpq, Prisma's engine (quaint) and pgJDBC all read it from the URL, where
        an engine that ignores ``PGOPTIONS`` still finds it."""
        base, mark, query = self.url.partition("?")
        if not base.startswith(("postgres://", "postgresql://")):  # a key=value conninfo
            params: dict[str, Any] = conninfo_to_dict(self.url)
            params["options"] = f"{params.get('options', '')} {extra}".strip()
            return make_conninfo(**params)
        pairs = [pair.partition("=") for pair in query.split("&") if pair] if mark else []
        given = next((urllib.parse.unquote(v) for k, _, v in pairs if k == "options"), "")
        kept = [f"{k}={v}" for k, _, v in pairs if k != "options"]
        options = urllib.parse.quote(f"{given} {extra}".strip(), safe="")
        return f"{base}?{'&'.join([*kept, f'options={options}'])}"

    def libpq_env(self) -> dict[str, str]:
        env = {_LIBPQ_ENV[k]: str(v) for k, v in self.params.items() if k in _LIBPQ_ENV}
        env.setdefault("PGDATABASE", self.dbname)
        return env


def _options_value(schema: str) -> str:
    """``schema`` as one value inside libpq's ``options`` (spaces and backslashes escaped)."""
    quoted = '"' + schema.replace('"', '""') + '"'
    return quoted.replace("\\", "\\\\").replace(" ", "\\ ")


# Every connection the window opens, so that a signal can cancel whatever query is running.
_open: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def cancel_running_queries() -> None:
    """Ask the server to cancel the query in flight on each open connection (idle: no-op)."""
    for conn in list(_open):
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)


def connect(db: Db, deadline: float, *, autocommit: bool = True,
            poll: Callable[[], None] = lambda: None,
            waiting: Callable[[int, int, str], None] | None = None
            ) -> psycopg.Connection[Any]:
    """Connect, retrying with backoff until ``deadline``; then one clear PhaseFailed.

    Serverless PostgreSQL can take minutes to wake, so one refused attempt proves nothing;
    a wrong password or a missing database is said at once. ``waiting`` hears each failed
    attempt that will be tried again: its number, about how many fit before the deadline,
    and why it failed.
    """
    delay, attempts = 0.5, 0
    expected = attempts_within(deadline - time.time())
    while True:
        attempts += 1
        try:
            conn = psycopg.connect(db.conninfo(deadline - time.time()), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            last = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
            if refused_for_good(str(exc)):
                raise PhaseFailed(f"{db} refused the connection: {_reason(last)}") from exc
            if time.time() + delay >= deadline:
                raise PhaseFailed(
                    f"cannot reach {db} after {attempts} attempt(s): {last}"
                ) from exc
            if waiting is not None:
                waiting(attempts, max(expected, attempts + 1), _reason(last))
        else:
            _open.add(conn)
            if conn.info.password:  # from the URL, PGPASSWORD or a .pgpass file alike
                register(conn.info.password)
            return conn
        poll()
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


# What the server says when waiting cannot help: a wrong password or role, a database that
# does not exist, no pg_hba.conf entry. Anything else (refused, starting up, too many
# connections, a timeout) may pass: a serverless database wakes, a restart ends.
_FOR_GOOD = re.compile(r"password authentication failed|authentication failed for user"
                       r"|role \"[^\"]*\" does not exist|database \"[^\"]*\" does not exist"
                       r"|no pg_hba\.conf entry")


def attempts_within(seconds: float) -> int:
    """How many attempts ``connect`` makes in ``seconds``, its backoff doubling from 0.5 s to
    at most 5 s (the attempts themselves taken as instant)."""
    count, delay, spent = 1, 0.5, 0.0
    while spent + delay < seconds:
        spent, count, delay = spent + delay, count + 1, min(delay * 2, 5.0)
    return count


def refused_for_good(message: str) -> bool:
    """Whether a failed connection's message is one that no retry can change."""
    return _FOR_GOOD.search(message) is not None


_PREAMBLE = re.compile(r"^(?:connection failed: )?connection to server (?:at|on) .*? failed: "
                       r"(?:FATAL: )?")


def _reason(line: str) -> str:
    """libpq's line without its ``connection failed: connection to server at ... failed:``
    preamble, which names the server the sentence names already."""
    return _PREAMBLE.sub("", " ".join(line.split())).strip()


def answers(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server still answers on ``conn``: after a failure, tells a server that
    went away (restart, failover) from one that refused the work."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def server_major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version // 10000)


class Table(NamedTuple):
    oid: int
    schema: str
    name: str
    # As PostgreSQL quotes it (``public.orders``, ``"a.b".c``): unique, so figures are keyed
    # by it, and shown as it is written in SQL.
    qualified: str

    def sql(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))


QUALIFIED: LiteralString = "format('%I.%I', n.nspname, c.relname)"  # Table.qualified


def user_tables(conn: psycopg.Connection[Any]) -> list[Table]:
    """Tables that hold rows: plain tables and partitions (a partitioned parent holds none
    itself), outside the system schemas, not owned by an extension (pg_dump skips those)."""
    return _relations(conn, "c.relkind = 'r'")


def partitioned_tables(conn: psycopg.Connection[Any]) -> list[Table]:
    """Partitioned parents, chosen as ``user_tables`` chooses tables: no rows of their own,
    but statistics of their own (ANALYZE samples their partitions)."""
    return _relations(conn, "c.relkind = 'p'")


def populated_matviews(conn: psycopg.Connection[Any]) -> list[Table]:
    """Materialized views that can be read, chosen as ``user_tables`` chooses tables. One made
    ``WITH NO DATA`` cannot be read, and a restore leaves it so."""
    return _relations(conn, "c.relkind = 'm' AND c.relispopulated")


def own_objects(catalog: LiteralString, alias: LiteralString) -> LiteralString:
    """SQL saying that the row ``alias`` of ``catalog`` (joined with its schema as ``n``) is
    the database's own: outside the system schemas (PostgreSQL reserves the ``pg_`` prefix
    for them) and not a member of an extension (pg_dump leaves those to the extension)."""
    return ("n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_%' AND NOT EXISTS (SELECT 1 FROM pg_depend d"
            " WHERE d.classid = '" + catalog + "'::regclass AND d.objid = " + alias + ".oid"
            " AND d.deptype = 'e')")


def _relations(conn: psycopg.Connection[Any], kind: LiteralString) -> list[Table]:
    return [Table(*row) for row in conn.execute(
        "SELECT c.oid::int8, n.nspname, c.relname, " + QUALIFIED + " FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + kind +
        " AND " + own_objects("pg_class", "c") + " ORDER BY 2, 3"
    ).fetchall()]


# A superuser's session cannot be ended by anyone else.
_MAY_END = ("(NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = usesysid), false)"
            " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))")


class Session(NamedTuple):
    pid: int
    application_name: str
    user: str
    state: str  # "" when this role may not see it (another role's, without pg_read_all_stats)
    seconds: float  # in its current transaction, or in its current state when outside one
    may_end: bool


def sessions(conn: psycopg.Connection[Any], dbname: str) -> list[Session]:
    """The other client sessions on a database, those this role may not look into included
    (their backend_type and state read NULL)."""
    return [Session(*row) for row in conn.execute(
        "SELECT pid, coalesce(application_name, ''), coalesce(usename::text, ''),"
        " coalesce(state, ''), coalesce(extract(epoch FROM now() - coalesce(xact_start,"
        " state_change, backend_start))::float8, 0), " + _MAY_END + " FROM pg_stat_activity"
        " WHERE datname = %s AND coalesce(backend_type, 'client backend') = 'client backend'"
        " AND pid <> pg_backend_pid() ORDER BY pid", (dbname,)).fetchall()]


def terminate_sessions(conn: psycopg.Connection[Any], *, dbname: str | None = None,
                       application_name: str | None = None,
                       application_prefix: str | None = None) -> int:
    """End other sessions on a database, with an application name, or whose application
    name starts with a prefix; how many were ended."""
    # Client sessions and walsenders (a logical-decoding consumer holds its database too),
    # only those this role may end; autovacuum workers give way to a rename by themselves.
    # Another role's session reads backend_type NULL to a role without pg_read_all_stats:
    # it is a client session all the same (pg_signal_backend may end it) when it has a role;
    # background workers have none (and only a superuser may signal them).
    pids = [row[0] for row in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND usesysid IS NOT NULL"
        " AND coalesce(backend_type, 'client backend') IN ('client backend', 'walsender')"
        " AND " + _MAY_END +
        " AND (%(db)s::text IS NULL OR datname = %(db)s)"
        " AND (%(app)s::text IS NULL OR application_name = %(app)s)"
        " AND (%(prefix)s::text IS NULL OR starts_with(application_name, %(prefix)s))",
        {"db": dbname, "app": application_name, "prefix": application_prefix},
    ).fetchall()]
    ended = 0
    for pid in pids:  # one by one: a session that may not be ended stops only itself
        try:
            row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            continue
        ended += bool(row and row[0])
    return ended


def connected(conn: psycopg.Connection[Any], dbname: str) -> list[tuple[int, str]]:
    """Who else is connected to ``dbname``: each session's pid and what this role may see of
    it (user, application, client address, state, kind)."""
    rows = conn.execute(
        "SELECT pid, coalesce(usename::text, '?'), coalesce(application_name, ''),"
        " CASE WHEN backend_type IS NULL THEN 'hidden from this role: grant it"
        " pg_read_all_stats' ELSE concat_ws(', ', 'from ' || coalesce(host(client_addr),"
        " 'a local socket'), state, backend_type) END FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY pid", (dbname,)).fetchall()
    return [(pid, f"pid {pid} (user {user}, application {app or '-'}, {seen})")
            for pid, user, app, seen in rows]


def blockers(conn: psycopg.Connection[Any], dbname: str) -> str:
    """Who is still connected to ``dbname``, and the statement that ends them, to be run by
    a role that may."""
    rows = connected(conn, dbname)
    if not rows:
        return "it was still in use a moment ago (the sessions have left since)"
    shown = "; ".join(seen for _pid, seen in rows[:5])
    pids = ", ".join(str(pid) for pid, _seen in rows)
    return (f"sessions this role may not end are connected: {shown}. End them as a role that"
            f" may (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN"
            f" ({pids}))")
