"""Dump, restore and verify: the backup's toolkit, which the backup phase, the rollback and the
rehearsal share.

An archive is a ``pg_dump -Fd`` folder under ``[backup] dir``, named by its run; a standby is
the archive restored into ``<db>_window_<run_id>``, compared with the backup's figures table
by table (a materialized view the restore recomputed is reported, not failed), then sealed
(closed to connections, marked verified). A rollback takes an archive from
``trusted_archive``, which checks its manifest once (and fetches it from S3 if need be).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import resource
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql

from orchestrator.engine import proc
from orchestrator.engine.context import Context
from orchestrator.engine.facts import BACKUP, FOLLOW, BackupFacts, RecomputedView
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import archive, databases, figures, follow, lock_slots, pg, tools
from orchestrator.postgres.figures import TableFigures
from orchestrator.toolkit.progress import TableProgress

NAME_LIMIT = 63  # PostgreSQL's identifier length
MIB = 1024 * 1024
LOW_SPACE_BYTES = 1024 * MIB  # less free room than this is named when a dump fails


def archive_path(ctx: Context) -> Path:
    return ctx.settings.path(ctx.settings.backup.dir) / ctx.run_id


def standby_name(dbname: str, run_id: str) -> str:
    return suffixed(dbname, f"_window_{run_id}")


def suffixed(dbname: str, suffix: str) -> str:
    return dbname[: NAME_LIMIT - len(suffix)] + suffix


def dump_compression(ctx: Context, dump: Path) -> str:
    """``pg_dump --compress`` for this window (the backup's and the rehearsal's): ``[backup]
    compress``, or for "auto" lz4 where ``dump`` is 16+, else gzip level 1."""
    chosen = ctx.settings.backup.compress
    if chosen != "auto":
        return chosen
    return "lz4" if (tools.major(dump) or 0) >= 16 else "1"


def out_of_room(folder: Path) -> str:
    """What may have cut a dump short, said with its error: a full disk, or a file size limit
    (``ulimit -f``) that pg_dump inherits from this process and that kills it part-way
    without a word of its own ("a worker process died unexpectedly")."""
    found = []
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        found.append(f"a file size limit of {soft / MIB:g} MiB (ulimit -f) applies to the"
                     " archive's files")
    with contextlib.suppress(OSError):
        if (free := shutil.disk_usage(folder).free) < LOW_SPACE_BYTES:
            found.append(f"only {free / MIB:.0f} MiB free in {folder}")
    return f" ({'; '.join(found)})" if found else ""


def tool_env(ctx: Context, db: pg.Db) -> dict[str, str]:
    """libpq's variables for pg_dump / pg_restore: the password never lands in argv."""
    env = ctx.command_env(db)
    env.update(db.libpq_env())
    env["PGAPPNAME"] = ctx.app_name
    return env


def run_tool(ctx: Context, command: list[str], *, db: pg.Db, label: str, failing: str,
             progress: TableProgress | None = None, room: Path | None = None) -> proc.Result:
    """One of PostgreSQL's programs (pg_dump, pg_restore), journaled like any command, with
    libpq's variables and its progress on a terminal; a non-zero exit is ``PhaseFailed``
    naming ``failing`` (and, with ``room``, what may have cut a dump short; when the server's
    lock table was full, what to raise: ``lock_slots``)."""
    result = ctx.run_command(command, db=db, env=tool_env(ctx, db), label=label,
                             progress=progress if progress and progress.enabled else None)
    if result.exit_code != 0:
        raise PhaseFailed(out_of_locks(ctx, db, label, result.output, progress)
                          + f"{failing} exited {result.exit_code}: {proc.tail(result.output)}"
                          + (out_of_room(room) if room else ""))
    return result


def out_of_locks(ctx: Context, db: pg.Db, program: str, output: str,
                 progress: TableProgress | None) -> str:
    """``lock_slots.explain`` and a space when ``output`` says the lock table was full, the
    tables counted by ``progress``; else nothing."""
    if not lock_slots.ran_out(output):
        return ""
    try:
        with ctx.connect(db) as conn:
            settings = lock_slots.read(conn)
            tables = progress.total if progress and progress.total else len(pg.user_tables(conn))
    except (psycopg.Error, PhaseFailed):
        return ""
    return lock_slots.explain(program, tables, settings) + " "


def dump_into(ctx: Context, path: Path, major: int, tables: int, *,
              snapshot: str | None = None, label: str = "pg_dump") -> str:
    """``pg_dump -Fd`` of production into ``path``, ``[backup] jobs`` at a time (of the
    exported ``snapshot`` when given); the compression it used."""
    dump = tools.find("pg_dump", major)
    compress = dump_compression(ctx, dump)
    progress = TableProgress("dumping", tables, TableProgress.DUMPED)
    command = [str(dump), "--format=directory", f"--jobs={ctx.settings.backup.jobs}",
               *([f"--snapshot={snapshot}"] if snapshot else []), f"--compress={compress}",
               f"--file={path}", *progress.flags()]
    run_tool(ctx, command, db=ctx.target, label=label, failing=label, progress=progress,
             room=path.parent)
    return compress


def marker(run_id: str, tables: dict[str, TableFigures]) -> str:
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()[:16]
    return f"window {run_id} verified {digest}"


def is_marked(conn: psycopg.Connection[Any], name: str, expected: str) -> bool:
    row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                       " WHERE datname = %s", (name,)).fetchone()
    return row is not None and row[0] == expected


def restore_into_new_database(ctx: Context, conn: psycopg.Connection[Any], source: Path,
                              name: str, *, like: str, tables: int = 0) -> float:
    """A fresh database ``name`` holding the archive; the seconds that took. The caller
    vouches for the archive: the backup phase has just written it and its manifest, and a
    rollback takes it from ``trusted_archive``, which checks the manifest once."""
    databases.drop(conn, name)  # a restore interrupted mid-way starts over
    databases.create_like(conn, name, like=like)
    # Only its owner may connect until it is sealed; production's grants come at the swap.
    conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
        sql.Identifier(name)))
    return restore_into(ctx, source, ctx.target.on(name), pg.server_major(conn), tables)


def restore_into(ctx: Context, source: Path, target: pg.Db, major: int, tables: int = 0
                 ) -> float:
    """The archive restored into the database ``target`` (new, or emptied); the seconds that
    took."""
    progress = TableProgress(f"restoring into {target.dbname}", tables, TableProgress.RESTORED)
    command = [str(tools.find("pg_restore", major)),
               f"--jobs={ctx.settings.backup.jobs}", "--exit-on-error",
               f"--dbname={target.dbname}", *progress.flags(), str(source)]
    started = time.monotonic()
    run_tool(ctx, command, db=target, label="pg_restore",
             failing=f"pg_restore into {target.dbname}", progress=progress)
    # No planner statistics yet: ``compare_with_backup``, which every restore is followed by,
    # analyzes the copy batch by batch as it reads it.
    if (ctx.journal.get(ctx.run_id, FOLLOW) or {}).get("mode") == "follow":
        with ctx.connect(target) as restored:  # the dump holds this run's publications
            follow.drop_publications(restored, ctx.run_id)
    return time.monotonic() - started


def seal(conn: psycopg.Connection[Any], name: str, mark: str) -> None:
    """Close a compared copy to connections, end any that slipped in, then mark it verified:
    from the mark on, nothing can have changed it."""
    databases.set_allow_connections(conn, name, allow=False)
    pg.terminate_sessions(conn, dbname=name)
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(mark)))


def manifest_digest(path: Path) -> str:
    return archive.sha256_file(archive.manifest_path(path))


def describe(ctx: Context, db: pg.Db, tables: list[pg.Table], *, snapshot: str | None = None,
             checksums: bool = True, analyze: bool = False,
             stop: threading.Event | None = None) -> dict[str, TableFigures]:
    """The figures of ``tables`` (``figures.describe_batch``), from ``[backup] jobs``
    connections at most, each taking the next batch until none is left (or ``stop`` is set).
    Each batch is its own transaction, so a connection holds the locks of one batch at a time
    (a schema of 10,000 tables does not fill the server's lock table); with ``snapshot``, each
    of those transactions imports that exported snapshot. With ``analyze``, each batch is
    analyzed first (a restored copy has no planner statistics; its pages are read once)."""
    if not tables:
        return {}
    with ctx.connect(db) as conn:
        by_text = figures.hashed_as_text(conn, tables)
        work = queue.SimpleQueue[list[pg.Table]]()
        for batch in figures.batches(conn, tables):
            work.put(batch)
        workers = min(ctx.settings.backup.jobs, work.qsize())

    def worker() -> dict[str, TableFigures]:
        found: dict[str, TableFigures] = {}
        with ctx.connect(db) as conn:
            if snapshot is not None:
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
            while stop is None or not stop.is_set():
                try:
                    batch = work.get_nowait()
                except queue.Empty:
                    break
                with conn.transaction():
                    if snapshot is not None:
                        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                            sql.Literal(snapshot)))
                    if analyze:
                        conn.execute(sql.SQL("ANALYZE {}").format(
                            sql.SQL(", ").join(t.sql() for t in batch)))
                    found.update(figures.describe_batch(conn, batch, checksums=checksums,
                                                        by_text=by_text))
        return found

    with ThreadPoolExecutor(max_workers=workers) as pool:
        running = [pool.submit(worker) for _ in range(workers)]
        return {key: found for done in running for key, found in done.result().items()}


def dump_described(ctx: Context, path: Path, major: int, tables: list[pg.Table], *,
                   views: list[pg.Table], snapshot: str) -> tuple[str, dict[str, TableFigures]]:
    """``dump_into`` of the exported ``snapshot`` and, alongside it, the figures of ``tables``
    and ``views`` in that same snapshot (``describe``): the compression, and the figures.
    The two share the snapshot, not the time: on a wide schema each takes seconds. When the
    dump fails, the figures stop at their next batch."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        described = pool.submit(describe, ctx, ctx.target, tables + views, snapshot=snapshot,
                                stop=stop)
        started = time.monotonic()
        try:
            compress = dump_into(ctx, path, major, len(tables), snapshot=snapshot)
        except BaseException:
            stop.set()
            raise
        ctx.log.info("backup_dumped", duration_s=round(time.monotonic() - started, 3),
                     size_bytes=archive.size_bytes(path), compress=compress)
        found = described.result()
    ctx.log.info("snapshot_described", tables=len(tables), materialized_views=len(views),
                 duration_s=round(time.monotonic() - started, 3))
    return compress, found


def compare_with_backup(ctx: Context, db: pg.Db, expected: dict[str, TableFigures], *,
                        checksums: bool = True,
                        views: dict[str, TableFigures] | None = None) -> list[RecomputedView]:
    """Rows (and checksums) of ``db`` equal the backup's, table by table, or PhaseFailed.

    Its populated materialized views are compared with ``views`` (by default the journaled
    backup's), and a difference is reported, never failed: a restore recomputes every view
    from tables just proven equal, so a view stale at the backup comes back fresh. Each one
    is logged (``materialized_view_recomputed``) and returned."""
    with ctx.connect(db) as conn:
        tables, matviews = pg.user_tables(conn), pg.populated_matviews(conn)
    # A restore brings no planner statistics: a database that serves before autovacuum gets
    # to it would plan every query blind. Each batch is analyzed as it is read; partitioned
    # parents, which hold no rows of their own, after.
    actual = describe(ctx, db, tables + matviews, checksums=checksums, analyze=True)
    with ctx.connect(db) as conn:
        analyze_partitioned(conn)
    in_copy = {view.qualified: actual.pop(view.qualified) for view in matviews}
    if not checksums:
        expected = {t: {"rows": v["rows"]} for t, v in expected.items()}
    wrong = sorted(t for t in {*expected, *actual} if expected.get(t) != actual.get(t))
    if wrong:
        shown = "; ".join(f"{t}: backup {expected.get(t)}, copy {actual.get(t)}"
                          for t in wrong[:5])
        raise PhaseFailed(f"the restored copy {db} differs from the backup: {shown}")
    if views is None:  # the rollback's restore: the views the backup described
        views = (ctx.journal.get(ctx.run_id, BACKUP) or BackupFacts()).get("materialized_views")
    if views is None:  # a backup taken before views were described: nothing to compare
        return []
    recomputed = recomputed_views(views, in_copy, checksums=checksums)
    for view in recomputed:
        ctx.log.warning("materialized_view_recomputed", database=db.dbname, **view)
    return recomputed


def analyze_partitioned(conn: psycopg.Connection[Any]) -> None:
    parents = pg.partitioned_tables(conn)
    if parents:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(t.sql() for t in parents)))


def recomputed_views(at_backup: dict[str, TableFigures], in_copy: dict[str, TableFigures], *,
                     checksums: bool = True) -> list[RecomputedView]:
    """The views whose figures in the copy differ from the backup's (rows only without
    ``checksums``); a view readable on one side only counts, its rows None on the other."""
    if not checksums:
        at_backup = {v: {"rows": f["rows"]} for v, f in at_backup.items()}
        in_copy = {v: {"rows": f["rows"]} for v, f in in_copy.items()}
    return [RecomputedView(view=view, rows_at_backup=_rows(at_backup.get(view)),
                           rows_in_copy=_rows(in_copy.get(view)))
            for view in sorted({*at_backup, *in_copy})
            if at_backup.get(view) != in_copy.get(view)]


def _rows(found: TableFigures | None) -> int | None:
    return found["rows"] if found else None


def trusted_archive(ctx: Context, facts: BackupFacts) -> Path:
    """The backup's archive, checked against its manifest. A missing or damaged local copy is
    fetched again from S3 when the backup was uploaded (a window resumed on another machine);
    a damaged one is kept aside, never deleted. The manifest itself must be the one written
    at the backup (its digest is journaled), so a substituted archive cannot pass."""
    if not facts.get("path"):
        raise PhaseFailed("the backup recorded no archive to restore from")
    path = Path(str(facts["path"]))
    if facts.get("s3_uri") and not path.parent.is_dir():
        path = archive_path(ctx)  # resumed on another machine: fetched into its own folder
    try:
        _check_archive(ctx, path, facts)
    except PhaseFailed:
        if not facts.get("s3_uri"):
            raise
        stamp = int(time.time())
        for item in (path, archive.manifest_path(path)):
            if item.exists():
                item.rename(item.with_name(f"{item.name}.damaged-{stamp}"))
                ctx.log.warning("archive_set_aside", path=f"{item}.damaged-{stamp}")
        from orchestrator.cloud import s3  # boto3 only when S3 is used

        started = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_archive(facts["s3_uri"], path.parent, deadline=ctx.deadline,
                                 poll=ctx.poll)
        ctx.log.info("archive_downloaded", uri=facts["s3_uri"],
                     duration_s=round(time.monotonic() - started, 3))
        _check_archive(ctx, path, facts)
    return path


def _check_archive(ctx: Context, path: Path, facts: BackupFacts) -> None:
    expected = facts.get("manifest_sha256")
    if expected and archive.manifest_path(path).is_file() and manifest_digest(path) != expected:
        raise PhaseFailed(f"the manifest of {path} is not the one written at the backup")
    archive.verify(path, ctx.settings.backup.jobs)
