"""Backup: a parallel dump of production, proven restorable before the banner goes up.

A REPEATABLE READ transaction exports its snapshot and stays open while ``pg_dump --snapshot``
dumps exactly that snapshot; then workers that import the same snapshot count and checksum
every table, so the figures describe exactly what the archive holds. A sha256
manifest is written beside the archive. Then (``verify = "restore"``) the archive is restored
into a standby copy, ``<db>_window_<run_id>``, whose checksums must equal the snapshot's; the
copy is marked verified and closed to connections, and kept until the window ends: rollback
becomes a rename. Re-entering the phase starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import IsolationLevel, sql

from orchestrator import archive, pg, pgtools
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases.base import PhaseResult
from phases.migrate import tail

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
    return "lz4" if (pgtools.major(dump) or 0) >= 16 else "1"


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


class TableProgress:
    """``pg_dump`` / ``pg_restore --verbose`` lines counted against the number of tables, shown
    on one terminal line; off a terminal (CI, pipes) it stays silent and asks for no
    ``--verbose`` at all."""

    DUMPED = "dumping contents of table"  # pg_dump, once per table (also with --jobs)
    RESTORED = "TABLE DATA"  # pg_restore: "finished item 3342 TABLE DATA orders"

    def __init__(self, what: str, total: int, marker: str, stream: TextIO | None = None
                 ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self.what, self.total, self.done, self.marker = what, total, 0, marker

    def flags(self) -> list[str]:
        return ["--verbose"] if self.enabled else []

    def __call__(self, line: str) -> None:
        if self.marker in line and (self.marker == self.DUMPED or "finished item" in line):
            self.done = min(self.total, self.done + 1)
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r  {self.what}: {self.done}/{self.total} tables{end}")
            self.stream.flush()


def marker(run_id: str, tables: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()[:16]
    return f"window {run_id} verified {digest}"


def is_marked(conn: psycopg.Connection[Any], name: str, expected: str) -> bool:
    row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                       " WHERE datname = %s", (name,)).fetchone()
    return row is not None and row[0] == expected


def restore_into_new_database(ctx: Context, conn: psycopg.Connection[Any], source: Path,
                              name: str, *, like: str, tables: int = 0) -> float:
    """A fresh database ``name`` holding the archive; the seconds pg_restore took. The caller
    vouches for the archive: the backup phase has just written it and its manifest, and a
    rollback takes it from ``trusted_archive``, which checks the manifest once."""
    pg.drop_database(conn, name)  # a restore interrupted mid-way starts over
    pg.create_database_like(conn, name, like=like)
    # Only its owner may connect until it is sealed; production's grants come at the swap.
    conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
        sql.Identifier(name)))
    target = ctx.target.on(name)
    progress = TableProgress(f"restoring into {name}", tables, TableProgress.RESTORED)
    command = [str(pgtools.find("pg_restore", pg.server_major(conn))),
               f"--jobs={ctx.settings.backup.jobs}", "--exit-on-error", f"--dbname={name}",
               *progress.flags(), str(source)]
    started = time.monotonic()
    result = ctx.run_command(command, db=target, env=tool_env(ctx, target), label="pg_restore",
                             progress=progress if progress.enabled else None)
    if result.exit_code != 0:
        raise PhaseFailed(f"pg_restore into {name} exited {result.exit_code}:"
                          f" {tail(result.output)}")
    return time.monotonic() - started


def seal(conn: psycopg.Connection[Any], name: str, mark: str) -> None:
    """Close a compared copy to connections, end any that slipped in, then mark it verified:
    from the mark on, nothing can have changed it."""
    pg.set_allow_connections(conn, name, allow=False)
    pg.terminate_sessions(conn, dbname=name)
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(mark)))


def manifest_digest(path: Path) -> str:
    return archive.sha256_file(archive.manifest_path(path))


def describe(ctx: Context, db: pg.Db, tables: list[pg.Table], *, snapshot: str | None = None,
             checksums: bool = True) -> dict[str, dict[str, Any]]:
    """``pg.describe_table`` for every table, ``[backup] jobs`` at a time, each worker on its
    own connection; with ``snapshot``, each worker reads that exported snapshot."""

    def one(table: pg.Table) -> tuple[str, dict[str, Any]]:
        with ctx.connect(db, autocommit=snapshot is None) as conn:
            if snapshot is not None:
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                    sql.Literal(snapshot)))
            return table.qualified, pg.describe_table(conn, table, checksums=checksums)

    with ThreadPoolExecutor(max_workers=ctx.settings.backup.jobs) as pool:
        return dict(pool.map(one, tables))


def compare_with_backup(ctx: Context, db: pg.Db, expected: dict[str, Any], *,
                        checksums: bool = True) -> None:
    """Rows (and checksums) of ``db`` equal the backup's, table by table, or PhaseFailed."""
    with ctx.connect(db) as conn:
        tables = pg.user_tables(conn)
    actual = describe(ctx, db, tables, checksums=checksums)
    if not checksums:
        expected = {t: {"rows": v["rows"]} for t, v in expected.items()}
    wrong = sorted(t for t in {*expected, *actual} if expected.get(t) != actual.get(t))
    if wrong:
        shown = "; ".join(f"{t}: backup {expected.get(t)}, copy {actual.get(t)}"
                          for t in wrong[:5])
        raise PhaseFailed(f"the restored copy {db} differs from the backup: {shown}")


def trusted_archive(ctx: Context, facts: dict[str, Any]) -> Path:
    """The backup's archive, checked against its manifest. A missing or damaged local copy is
    fetched again from S3 when the backup was uploaded (a window resumed on another machine);
    a damaged one is kept aside, never deleted. The manifest itself must be the one written
    at the backup (its digest is journaled), so a substituted archive cannot pass."""
    path = Path(facts["path"])
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
        from orchestrator import s3store  # boto3 only when S3 is used

        started = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        s3store.download_archive(facts["s3_uri"], path.parent, deadline=ctx.deadline,
                                 poll=ctx.poll)
        ctx.log.info("archive_downloaded", uri=facts["s3_uri"],
                     duration_s=round(time.monotonic() - started, 3))
        _check_archive(ctx, path, facts)
    return path


def _check_archive(ctx: Context, path: Path, facts: dict[str, Any]) -> None:
    expected = facts.get("manifest_sha256")
    if expected and archive.manifest_path(path).is_file() and manifest_digest(path) != expected:
        raise PhaseFailed(f"the manifest of {path} is not the one written at the backup")
    archive.verify(path, ctx.settings.backup.jobs)


class Backup:
    name = "backup"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.settings.backup.method == "rds_snapshot":
            return self._snapshot(ctx)
        path = archive_path(ctx)
        self._start_over(ctx, path)
        with ctx.connect(ctx.target, autocommit=False) as conn:
            # Counters first: a commit between the two is reported as lost when it is not,
            # never the other way round.
            writes = pg.write_counters(conn)
            conn.commit()
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = str(row[0]) if row else ""
            tables = pg.user_tables(conn)
            major = pg.server_major(conn)
            compress = self._dump(ctx, path, snapshot, major, len(tables))
            # The snapshot stays exported while this transaction is open: the figures describe
            # exactly what pg_dump read, computed after it so the two never share the CPU.
            started = time.monotonic()
            figures = describe(ctx, ctx.target, tables, snapshot=snapshot)
            ctx.log.info("snapshot_described", tables=len(figures),
                         duration_s=round(time.monotonic() - started, 3))
            conn.rollback()
        self._check_contents(ctx, path, tables, major)
        manifest = archive.write_manifest(path, ctx.settings.backup.jobs)
        facts: dict[str, Any] = {
            "path": str(path), "manifest": str(manifest), "size_bytes": archive.size_bytes(path),
            "manifest_sha256": manifest_digest(path),
            "verified": False, "verification": ctx.settings.backup.verify, "standby": None,
            "tables": figures, "writes": writes, "compress": compress,
        }
        ctx.journal.put(ctx.run_id, "backup", facts)  # checkpoint before the long proof
        if ctx.settings.backup.verify == "restore":
            facts.update(verified=True, standby=self._prove(ctx, path, figures))
            ctx.journal.put(ctx.run_id, "backup", facts)
        if ctx.settings.backup_s3_uri:
            facts["s3_uri"] = self._upload(ctx, path, manifest)
            ctx.journal.put(ctx.run_id, "backup", facts)
        rows = sum(t["rows"] for t in figures.values())
        return PhaseResult(f"{len(figures)} tables, {rows} rows, {facts['size_bytes']} bytes in"
                           f" {path}" + (", verified by restore" if facts["verified"] else ""))

    @staticmethod
    def _upload(ctx: Context, path: Path, manifest: Path) -> str:
        from orchestrator import s3store  # boto3 only when S3 is used

        started = time.monotonic()
        uri = s3store.upload_archive(path, manifest, str(ctx.settings.backup_s3_uri),
                                     deadline=ctx.deadline, poll=ctx.poll)
        ctx.log.info("backup_uploaded", uri=uri, duration_s=round(time.monotonic() - started, 3))
        return uri

    @staticmethod
    def _snapshot(ctx: Context) -> PhaseResult:
        """``method = "rds_snapshot"``: the instance's own snapshot is the backup."""
        from orchestrator import rds  # boto3 only when RDS is used

        instance = ctx.settings.backup.rds.instance_id if ctx.settings.backup.rds else ""
        with ctx.connect(ctx.target) as conn:
            writes = pg.write_counters(conn)
        snapshot = rds.create_snapshot(instance, f"window-{ctx.run_id.replace('_', '-')}",
                                       deadline=ctx.deadline, poll=ctx.poll)
        ctx.journal.put(ctx.run_id, "backup", {
            "method": "rds_snapshot", "instance_id": instance, "snapshot": snapshot,
            "path": None, "verified": False, "tables": {}, "writes": writes})
        ctx.log.info("snapshot_taken", instance=instance, snapshot=snapshot["snapshot_id"])
        return PhaseResult(f"RDS snapshot {snapshot['snapshot_id']} of {instance} available")

    def finish(self, ctx: Context, state: str) -> None:
        """After a completed or aborted window the standby copy has served its purpose; after
        a rollback it is production, and after needs_attention a person may want it."""
        if state not in ("completed", "aborted"):
            return
        name = standby_name(ctx.target.dbname, ctx.run_id)
        with ctx.maintenance(ctx.target) as conn:
            if pg.database_exists(conn, name):
                pg.drop_database(conn, name)
                ctx.log.info("standby_dropped", database=name)

    @staticmethod
    def _start_over(ctx: Context, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        archive.manifest_path(path).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)

    def _prove(self, ctx: Context, path: Path, figures: dict[str, Any]) -> str:
        name = standby_name(ctx.target.dbname, ctx.run_id)
        with ctx.maintenance(ctx.target) as conn:
            took = restore_into_new_database(ctx, conn, path, name, like=ctx.target.dbname,
                                             tables=len(figures))
            ctx.log.info("backup_restored", database=name, duration_s=round(took, 3))
            started = time.monotonic()
            compare_with_backup(ctx, ctx.target.on(name), figures)
            ctx.log.info("backup_verified", database=name,
                         duration_s=round(time.monotonic() - started, 3))
            seal(conn, name, marker(ctx.run_id, figures))
        return name

    def _dump(self, ctx: Context, path: Path, snapshot: str, major: int, tables: int) -> str:
        settings = ctx.settings.backup
        dump = pgtools.find("pg_dump", major)
        compress = dump_compression(ctx, dump)
        progress = TableProgress("dumping", tables, TableProgress.DUMPED)
        command = [str(dump), "--format=directory", f"--jobs={settings.jobs}",
                   f"--snapshot={snapshot}", f"--compress={compress}", f"--file={path}",
                   *progress.flags()]
        started = time.monotonic()
        result = ctx.run_command(command, db=ctx.target, env=tool_env(ctx, ctx.target),
                                 label="pg_dump", progress=progress if progress.enabled else None)
        if result.exit_code != 0:
            raise PhaseFailed(f"pg_dump exited {result.exit_code}: {tail(result.output)}"
                              + out_of_room(path.parent))
        ctx.log.info("backup_dumped", duration_s=round(time.monotonic() - started, 3),
                     size_bytes=archive.size_bytes(path), compress=compress)
        return compress

    @staticmethod
    def _check_contents(ctx: Context, path: Path, tables: list[pg.Table], major: int) -> None:
        command = [str(pgtools.find("pg_restore", major)), "--list", str(path)]
        result = ctx.run_command(command, db=ctx.target, env=tool_env(ctx, ctx.target),
                                 label="pg_restore --list")
        if result.exit_code != 0:
            raise PhaseFailed(f"the archive's table of contents does not read: "
                              f"{tail(result.output)}")
        # "3348; 0 16394 TABLE DATA public orders owner": the third field is the table's oid,
        # which, unlike the names, cannot contain spaces.
        listed = {int(line.split()[2]) for line in result.stdout.splitlines()
                  if " TABLE DATA " in line and not line.startswith(";")}
        missing = [t.qualified for t in tables if t.oid not in listed]
        if missing:
            raise PhaseFailed(f"the archive lacks data for {', '.join(missing)}")
