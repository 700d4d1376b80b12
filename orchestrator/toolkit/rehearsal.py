"""The rehearsal: the production migration and every check, run first where a failure costs
nothing, and timed, so that the window's timeline is validated before anything is touched.

``[staging] mode = "url"`` rehearses on the staging database as it is. ``mode = "clone"``
rehearses on a fresh copy of production, dumped as the backup dumps it and restored into a
scratch database ``<db>_rehearsal_<run_id>`` on staging's server (``clone_on = "production"``:
beside production); the migration and the checks run there, then the scratch database and
its archive are removed, whatever happened. Staging itself is never touched in clone mode.
The restore is timed too: it predicts how long a rollback's restore takes. The same names
every time for a run: a resumed window removes what an interrupted rehearsal left, and
starts over.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from orchestrator.engine.context import Context
from orchestrator.errors import PhaseFailed, WindowError
from orchestrator.postgres import databases, pg, tools
from orchestrator.postgres.migrations import ToolState, named
from orchestrator.redact import redact
from orchestrator.toolkit import checks
from orchestrator.toolkit.dumps import dump_compression, run_tool, suffixed
from orchestrator.toolkit.migration import newly_applied, run_migration, tool_state
from orchestrator.toolkit.progress import TableProgress

CLEANUP_SECONDS = 30.0


def rehearse(ctx: Context) -> dict[str, Any]:
    """Rehearse as ``[staging] mode`` says; the measurements, in seconds."""
    started = time.monotonic()
    measured = _on_clone(ctx) if ctx.settings.staging.mode == "clone" else _on_staging(ctx)
    return {**measured, "total_s": _seconds(started)}


def _on_staging(ctx: Context) -> dict[str, Any]:
    production = tool_state(ctx, ctx.target)
    before = tool_state(ctx, ctx.staging)
    if production is not None and before is not None:
        _holds_what_production_holds(ctx.staging, before, production)
    return {"mode": "url", "database": str(ctx.staging),
            **_migrate_and_check(ctx, ctx.staging, before, production)}


def _holds_what_production_holds(db: pg.Db, staging: ToolState, production: ToolState
                                 ) -> None:
    """In url mode staging must hold exactly the migrations production holds: a staging
    already migrated (an earlier attempt) would rehearse nothing, one further behind would
    rehearse more than production will run."""
    ahead = [m for m in staging.applied if m not in set(production.applied)]
    behind = [m for m in production.applied if m not in set(staging.applied)]
    if not (ahead or behind):
        return
    differs = "; ".join([*([f"staging has {named(ahead)} applied, production has not"]
                           if ahead else []),
                         *([f"production has {named(behind)} applied, staging has not"]
                           if behind else [])])
    raise PhaseFailed(f"staging {db} does not hold what production holds ({differs}): a"
                      " rehearsal there would not rehearse this migration. Nothing was run;"
                      " refresh staging from production, or rehearse on a fresh copy of"
                      ' production ([staging] mode = "clone").')


def _migrate_and_check(ctx: Context, db: pg.Db, before: ToolState | None,
                       production: ToolState | None) -> dict[str, Any]:
    started = time.monotonic()
    run_migration(ctx, db)
    migrate_s = _seconds(started)
    applied = _applied(ctx, db, before, production)
    ctx.log.info("rehearsal_migrated", database=str(db), duration_s=migrate_s,
                 applied=applied)
    started = time.monotonic()
    outcomes = checks.run_all(ctx, db, migrate_phase=ctx.phase)
    return {"migrate_s": migrate_s, "checks_s": _seconds(started), "checks": len(outcomes),
            "applied": applied}


def _applied(ctx: Context, db: pg.Db, before: ToolState | None,
             production: ToolState | None) -> list[str] | None:
    """What the rehearsal applied, from the tool's table before and after; a rehearsal that
    applied nothing while production has migrations pending proves nothing, and fails.
    None with ``tool = "none"``: nothing can tell."""
    if before is None or production is None:
        ctx.log.warning("rehearsal_unproven", reason='with [migrate] tool = "none" nothing'
                        " can tell what the rehearsal applied")
        return None
    after = tool_state(ctx, db)
    applied = newly_applied(before, after) if after is not None else []
    if production.pending and not applied:
        raise PhaseFailed(f"the rehearsal on {db} applied nothing, while production has"
                          f" {len(production.pending)} migration(s) pending"
                          f" ({named(production.pending)}): it proves nothing about them.")
    return applied


def _on_clone(ctx: Context) -> dict[str, Any]:
    scratch = scratch_database(ctx)
    remove_clone(ctx)  # an interrupted rehearsal of this run starts over
    # pg_dump's and pg_restore's sessions carry their own name: the no-migrate-sessions
    # check looks for the migrate command's alone.
    copying = replace(ctx, phase=f"{ctx.phase}/clone")
    try:
        dumped = _dump(copying, clone_archive(ctx))
        restore_s = _restore(copying, clone_archive(ctx), scratch, dumped)
        copied = tool_state(ctx, scratch)  # production's own history, as the copy holds it
        return {"mode": "clone", "database": str(scratch), "dump_s": dumped.seconds,
                "restore_s": restore_s, **_migrate_and_check(ctx, scratch, copied, copied)}
    finally:
        try:
            remove_clone(ctx.shielded(CLEANUP_SECONDS))
        except (WindowError, psycopg.Error, OSError) as exc:  # the window's end tries again
            ctx.log.warning("rehearsal_database_not_dropped", database=str(scratch),
                            error=redact(str(exc)))


def scratch_server(ctx: Context) -> pg.Db:
    return ctx.target if ctx.settings.staging.clone_on == "production" else ctx.staging


def scratch_database(ctx: Context) -> pg.Db:
    """The scratch database, as a URL of the form its server's came in: the migration tool
    reads it as DATABASE_URL (Prisma takes a URL, not libpq's key=value form)."""
    return database_on(scratch_server(ctx),
                       suffixed(ctx.target.dbname, f"_rehearsal_{ctx.run_id}"),
                       schema=ctx.target.schema or "")


def database_on(db: pg.Db, name: str, schema: str | None = None) -> pg.Db:
    """``db``'s server, credentials and parameters, database ``name``. A ``schema`` replaces
    Prisma's ``?schema=`` (the copy holds production's schemas; "" drops it)."""
    parts = urllib.parse.urlsplit(db.url)
    if parts.scheme in ("postgres", "postgresql"):
        path = "/" + urllib.parse.quote(name, safe="")
        query = parts.query
        if schema is not None:
            kept = [pair for pair in query.split("&") if pair and
                    urllib.parse.unquote(pair.partition("=")[0]) != "schema"]
            query = "&".join([*kept, *(["schema=" + urllib.parse.quote(schema, safe="")]
                                        if schema else [])])
        scratch = pg.Db.from_url(urllib.parse.urlunsplit(
            parts._replace(path=path, query=query)))
        # A ?dbname= parameter would win over the path: never migrate what it names.
        if scratch.dbname == name:
            return scratch
    return db.on(name)


def clone_archive(ctx: Context) -> Path:
    # One level deeper than the backups' <run_id> folders: never listed as a backup.
    return ctx.settings.path(ctx.settings.backup.dir) / ".rehearsal" / ctx.run_id


def remove_clone(ctx: Context) -> None:
    """Drop this run's scratch database (its sessions ended first) and delete its archive."""
    path = clone_archive(ctx)
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):  # another window's rehearsal may be using it
        path.parent.rmdir()
    scratch = scratch_database(ctx)
    with ctx.maintenance(scratch) as conn:
        if not databases.exists(conn, scratch.dbname):
            return
        pg.terminate_sessions(conn, dbname=scratch.dbname)
        databases.drop(conn, scratch.dbname)
    ctx.log.info("rehearsal_database_dropped", database=str(scratch))


class Dumped(NamedTuple):
    seconds: float
    major: int  # production's server: pg_restore must be as new
    tables: int
    locale: tuple[str, str, str]  # production's encoding, collation and character type


def _dump(ctx: Context, path: Path) -> Dumped:
    """A directory archive of production, as the backup makes it (without a snapshot of
    its own to count against: nothing is compared)."""
    with ctx.connect(ctx.target) as conn:
        tables, major = len(pg.user_tables(conn)), pg.server_major(conn)
        row = conn.execute("SELECT pg_encoding_to_char(encoding), datcollate, datctype"
                           " FROM pg_database WHERE datname = current_database()").fetchone()
    locale = (str(row[0]), str(row[1]), str(row[2])) if row else ("UTF8", "C", "C")
    dump = tools.find("pg_dump", major)
    progress = TableProgress("dumping production", tables, TableProgress.DUMPED)
    command = [str(dump), "--format=directory", f"--jobs={ctx.settings.backup.jobs}",
               f"--compress={dump_compression(ctx, dump)}", f"--file={path}",
               *progress.flags()]
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run_tool(ctx, command, db=ctx.target, label="pg_dump (rehearsal)",
             failing="pg_dump of production for the rehearsal", progress=progress)
    took = _seconds(started)
    ctx.log.info("rehearsal_dumped", duration_s=took)
    return Dumped(took, major, tables, locale)


def _restore(ctx: Context, path: Path, scratch: pg.Db, dumped: Dumped) -> float:
    """The archive restored into a new scratch database; the seconds pg_restore took."""
    with ctx.maintenance(scratch) as conn:
        _create(conn, scratch, dumped.locale)
    # Beside production its roles exist; on staging's server they may not: there, everything
    # belongs to the role the window connects as.
    foreign = [] if ctx.settings.staging.clone_on == "production" else \
        ["--no-owner", "--no-privileges"]
    progress = TableProgress(f"restoring into {scratch.dbname}", dumped.tables,
                             TableProgress.RESTORED)
    command = [str(tools.find("pg_restore", dumped.major)),
               f"--jobs={ctx.settings.backup.jobs}", "--exit-on-error", *foreign,
               f"--dbname={scratch.dbname}", *progress.flags(), str(path)]
    started = time.monotonic()
    run_tool(ctx, command, db=scratch, label="pg_restore (rehearsal)",
             failing=f"pg_restore into the rehearsal database {scratch}", progress=progress)
    took = _seconds(started)
    ctx.log.info("rehearsal_restored", database=str(scratch), duration_s=took)
    return took


def _create(conn: psycopg.Connection[Any], scratch: pg.Db, locale: tuple[str, str, str]
            ) -> None:
    """An empty database with production's encoding and locale, owned by the connecting
    role; closed to everyone else (it holds production's data, maybe on a staging server)."""
    encoding, collate, ctype = locale
    name = sql.Identifier(scratch.dbname)
    try:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {}"
                             " LC_CTYPE {}").format(name, sql.Literal(encoding),
                                                    sql.Literal(collate), sql.Literal(ctype)))
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PhaseFailed(f"cannot create the rehearsal database {scratch}: {redact(first)}"
                          ) from exc
    conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(name))


def _seconds(started: float) -> float:
    return round(time.monotonic() - started, 3)
