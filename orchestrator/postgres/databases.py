"""Databases as objects of the cluster: created like production, swapped in its place, dropped.

A rollback gives back a copy of production under production's name; the copy must be the same
database object, not only the same rows: owner, encoding, locale provider and locale,
collation and ctype, tablespace, connection limit, template flag, whether it takes
connections, its comment, grants and settings. What CREATE DATABASE fixes for good is given at
creation (``create_like``); the rest at the swap (``copy_access``, ``swap``). The swap's two
renames and what it sets are one transaction (``ALTER DATABASE ... RENAME`` is
transactional): production's name never points nowhere, whatever kills the window.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from orchestrator import crash
from orchestrator.errors import PhaseFailed
from orchestrator.postgres.pg import blockers, connected, own_objects, terminate_sessions
from orchestrator.redact import redact

NAME_BLOCKERS_EVERY = 3.0  # at most one line per this many seconds naming who holds a swap up


def exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
        is not None


def properties(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    """``pg_database``'s row for ``name`` (whatever columns this server's version has), with
    its owner's and tablespace's names and its comment; PhaseFailed when there is none."""
    row = conn.execute(
        "SELECT to_jsonb(d) || jsonb_build_object('owner', pg_get_userbyid(d.datdba),"
        " 'encoding_name', pg_encoding_to_char(d.encoding), 'tablespace', t.spcname,"
        " 'comment', shobj_description(d.oid, 'pg_database'))"
        " FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
        " WHERE d.datname = %s", (name,)).fetchone()
    if row is None:
        raise PhaseFailed(f"database {name!r} does not exist")
    return dict(row[0])


def create_like(conn: psycopg.Connection[Any], name: str, like: str) -> None:
    """An empty database with what CREATE DATABASE fixes for good taken from ``like``: owner,
    encoding, locale provider and locale, collation, ctype, tablespace."""
    of = properties(conn, like)
    options = [sql.SQL("OWNER {}").format(sql.Identifier(of["owner"])),
               sql.SQL("TEMPLATE template0 ENCODING {}").format(sql.Literal(of["encoding_name"])),
               sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(of["datcollate"]),
                                                           sql.Literal(of["datctype"]))]
    provider = of.get("datlocprovider")  # PostgreSQL 15 and later
    locale = of.get("datlocale") or of.get("daticulocale")  # 17 renamed it
    if provider == "i":
        options.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale)))
        if of.get("daticurules"):  # 16 and later
            options.append(sql.SQL("ICU_RULES {}").format(sql.Literal(of["daticurules"])))
    elif provider == "b":
        options.append(sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(
            sql.Literal(locale)))
    if of["tablespace"] != "pg_default":
        options.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(of["tablespace"])))
    conn.execute(sql.SQL("CREATE DATABASE {} {}").format(sql.Identifier(name),
                                                         sql.SQL(" ").join(options)))
    crash.point("pg.create_database_like")


def copy_access(conn: psycopg.Connection[Any], source: str, target: str) -> list[str]:
    """Grants and ``ALTER DATABASE ... SET`` settings of ``source``, onto ``target``: a
    restore without ``--create`` brings neither. The settings that could not be copied."""
    acl = conn.execute(
        "SELECT a.grantee = 0, pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable"
        " FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (source,)).fetchall()
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
        sql.Identifier(target)))
    if not acl:  # the default: PUBLIC may connect and create temporary tables
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(
            sql.Identifier(target)))
    for public, grantee, privilege, grantable in acl:
        conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(privilege), sql.Identifier(target),
            sql.SQL("PUBLIC") if public else sql.Identifier(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    skipped = []
    for role, setting in conn.execute(
        "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,"
        " unnest(s.setconfig) FROM pg_db_role_setting s"
        " JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s", (source,)
    ).fetchall():
        key, value = setting.split("=", 1)
        scope = sql.SQL("DATABASE {}").format(sql.Identifier(target)) if role is None else \
            sql.SQL("ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(target))
        try:
            # set_config parses the stored text exactly as the server did; FROM CURRENT
            # then stores it, list-valued settings such as search_path included.
            conn.execute("SELECT set_config(%s, %s, false)", (key, value))
            conn.execute(sql.SQL("ALTER {} SET {} FROM CURRENT").format(
                scope, sql.Identifier(key)))
        except psycopg.Error:
            skipped.append(setting if role is None else f"{setting} (role {role})")
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("RESET {}").format(sql.Identifier(key)))
    return skipped


def set_allow_connections(conn: psycopg.Connection[Any], name: str, allow: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allow else "false")))


def swap(conn: psycopg.Connection[Any], production: str, retained: str, copy: str, *,
         mark: str, deadline: float,
         waiting: Callable[[list[str]], None] | None = None) -> None:
    """``production`` renamed to ``retained`` and ``copy`` (sealed with ``mark``) to
    ``production``, with production's connection limit, template flag, connections allowed
    and comment, in one transaction: committed whole or not at all. Sessions on production
    are ended (new ones refused meanwhile) and the swap retried while some linger, until
    ``deadline``; then PhaseFailed naming them. Meanwhile ``waiting`` hears who holds it up,
    every few seconds. Without ``production`` (an earlier swap's first rename, before renames
    were one transaction), the copy just takes its name."""
    present = exists(conn, production)
    was = properties(conn, production if present else retained)
    if present:
        set_allow_connections(conn, production, allow=False)
    crash.point("pg.swap.closed")
    said = float("-inf")  # the first refused attempt names them (an attempt waits 5 s)
    try:
        while True:
            if present:
                terminate_sessions(conn, dbname=production)
            try:
                with conn.transaction():
                    _swap_once(conn, (production, retained, copy), mark, was, present=present)
                break
            except psycopg.errors.ObjectInUse as exc:
                if time.time() >= deadline:
                    raise PhaseFailed(f"{production} cannot be renamed:"
                                      f" {redact(blockers(conn, production))}") from exc
                if waiting is not None and time.monotonic() >= said + NAME_BLOCKERS_EVERY:
                    said = time.monotonic()
                    waiting([redact(seen) for _pid, seen in connected(conn, production)])
                time.sleep(0.2)
    finally:
        if present and exists(conn, production) and not exists(conn, retained):
            set_allow_connections(conn, production, allow=was["datallowconn"])
    crash.point("pg.swap")


def _swap_once(conn: psycopg.Connection[Any], names: tuple[str, str, str], mark: str,
               was: dict[str, Any], *, present: bool) -> None:
    production, retained, copy = names
    of_copy = properties(conn, copy)
    if of_copy["comment"] != mark:
        raise PhaseFailed(f"{copy} is not the copy verified against the backup")
    if present:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(production), sql.Identifier(retained)))
        crash.point("pg.swap.renamed_aside")  # killed here, the transaction never happened
        # The retained database takes connections as production did, for a person to look.
        set_allow_connections(conn, retained, allow=was["datallowconn"])
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(copy), sql.Identifier(production)))
    target = sql.Identifier(production)
    conn.execute(sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {} IS_TEMPLATE {}"
                         " ALLOW_CONNECTIONS {}").format(
        target, sql.Literal(was["datconnlimit"]), sql.SQL(str(was["datistemplate"]).lower()),
        sql.SQL(str(was["datallowconn"]).lower())))
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        target, sql.Literal(was["comment"])))


# Where a database's own objects live: every schema but the system's and the extensions'.
_SCHEMAS = ("SELECT n.nspname FROM pg_namespace n WHERE " + own_objects("pg_namespace", "n")
            + " ORDER BY 1")


def empty(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop what a restore of the database ``conn`` is connected to would create again:
    publications, extensions (plpgsql aside), large objects, and every schema with what is in
    it; ``public`` comes back empty, as a new database has it. One transaction: all or
    nothing. The schemas dropped."""
    with conn.transaction():
        for (name,) in conn.execute("SELECT pubname FROM pg_publication ORDER BY 1").fetchall():
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
        for (name,) in conn.execute("SELECT extname FROM pg_extension WHERE extname <>"
                                    " 'plpgsql' ORDER BY 1").fetchall():
            conn.execute(sql.SQL("DROP EXTENSION IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))
        conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        schemas = [name for (name,) in conn.execute(_SCHEMAS).fetchall()]
        for name in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        if "public" in schemas:  # as initdb makes it; the archive holds where it differed
            conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner;"
                         " GRANT USAGE ON SCHEMA public TO PUBLIC;"
                         " COMMENT ON SCHEMA public IS 'standard public schema'")
    crash.point("pg.empty_database")
    return schemas


def reopen_closed(conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
    """Let connections into any of ``names`` a crashed swap left closed; which were."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname = ANY(%s) AND NOT datallowconn",
        (names,)).fetchall()
    for (name,) in rows:
        set_allow_connections(conn, name, allow=True)
    return [name for (name,) in rows]


def drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))
    crash.point("pg.drop_database")
