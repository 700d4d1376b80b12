"""Backup: a parallel dump of production, proven restorable before the banner goes up.

A REPEATABLE READ transaction exports its snapshot and stays open while ``pg_dump --snapshot``
dumps exactly that snapshot; alongside it, workers that import the same snapshot count and
checksum every table, so the figures describe exactly what the archive holds. A sha256
manifest is written beside the archive. Then (``verify = "restore"``) the archive is restored
into a standby copy, ``<db>_window_<run_id>``, whose checksums must equal the snapshot's; the
copy is marked verified and closed to connections, and kept until the window ends: rollback
becomes a rename. Re-entering the phase starts over.

Populated materialized views are checksummed with the tables, but an archive holds no rows
of theirs: the restore recomputes them. A view that was stale at the backup comes back with
other contents, which is reported (journaled with the backup, named in its summary) and
does not fail it: the tables it is computed from were proven equal.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from psycopg import IsolationLevel

from orchestrator.engine import proc
from orchestrator.engine.context import Context
from orchestrator.engine.facts import (
    BACKUP,
    FOLLOW,
    BackupFacts,
    RecomputedView,
    follow_words,
    recomputed_words,
)
from orchestrator.engine.phase import PhaseResult
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import archive, databases, pg, tools
from orchestrator.postgres.figures import write_counters
from orchestrator.toolkit import following
from orchestrator.toolkit.dumps import (
    archive_path,
    compare_with_backup,
    dump_described,
    manifest_digest,
    marker,
    restore_into_new_database,
    seal,
    standby_name,
    tool_env,
)


class Backup:
    name = "backup"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.settings.backup.method == "rds_snapshot":
            return self._snapshot(ctx)
        path = archive_path(ctx)
        self._start_over(ctx, path)
        with ctx.connect(ctx.target, autocommit=False) as conn, ExitStack() as held:
            # Counters first: a commit between the two is reported as lost when it is not,
            # never the other way round.
            writes = write_counters(conn)
            conn.commit()
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            # This run's slot's snapshot where the standby will follow production.
            snapshot = held.enter_context(following.snapshot(ctx, conn))
            tables, views = pg.user_tables(conn), pg.populated_matviews(conn)
            major = pg.server_major(conn)
            # The snapshot stays exported while this transaction is open: the figures,
            # computed alongside the dump, describe exactly what pg_dump read.
            compress, described = dump_described(ctx, path, major, tables, views=views,
                                                  snapshot=snapshot)
            figures = {t.qualified: described[t.qualified] for t in tables}
            view_figures = {v.qualified: described[v.qualified] for v in views}
            conn.rollback()
        self._check_contents(ctx, path, tables, major)
        manifest = archive.write_manifest(path, ctx.settings.backup.jobs)
        facts = BackupFacts(
            path=str(path), manifest=str(manifest), size_bytes=archive.size_bytes(path),
            manifest_sha256=manifest_digest(path), verified=False,
            verification=ctx.settings.backup.verify, standby=None, tables=figures,
            materialized_views=view_figures, writes=writes, compress=compress)
        ctx.journal.put(ctx.run_id, BACKUP, facts)  # checkpoint before the long proof
        if ctx.settings.backup.verify == "restore":
            facts["standby"], facts["recomputed_views"] = self._prove(ctx, path, facts)
            facts["verified"] = True
            ctx.journal.put(ctx.run_id, BACKUP, facts)
            following.subscribe(ctx)
        if ctx.settings.backup_s3_uri:
            facts["s3_uri"] = self._upload(ctx, path, manifest)
            ctx.journal.put(ctx.run_id, BACKUP, facts)
        rows = sum(t["rows"] for t in figures.values())
        return PhaseResult(f"{len(figures)} tables, {rows} rows, {facts['size_bytes']} bytes in"
                           f" {path}" + (", verified by restore" if facts["verified"] else "")
                           + recomputed_summary(facts.get("recomputed_views", []))
                           + _said(follow_words(ctx.journal.get(ctx.run_id, FOLLOW))))

    @staticmethod
    def _upload(ctx: Context, path: Path, manifest: Path) -> str:
        from orchestrator.cloud import s3  # boto3 only when S3 is used

        started = time.monotonic()
        uri = s3.upload_archive(path, manifest, str(ctx.settings.backup_s3_uri),
                                     deadline=ctx.deadline, poll=ctx.poll)
        ctx.log.info("backup_uploaded", uri=uri, duration_s=round(time.monotonic() - started, 3))
        return uri

    @staticmethod
    def _snapshot(ctx: Context) -> PhaseResult:
        """``method = "rds_snapshot"``: the instance's own snapshot is the backup."""
        from orchestrator.cloud import rds  # boto3 only when RDS is used

        instance = ctx.settings.backup.rds.instance_id if ctx.settings.backup.rds else ""
        with ctx.connect(ctx.target) as conn:
            writes = write_counters(conn)
        snapshot = rds.create_snapshot(instance, f"window-{ctx.run_id.replace('_', '-')}",
                                       deadline=ctx.deadline, poll=ctx.poll)
        ctx.journal.put(ctx.run_id, BACKUP, BackupFacts(
            method="rds_snapshot", instance_id=instance, snapshot=snapshot, path=None,
            verified=False, tables={}, writes=writes))
        ctx.log.info("snapshot_taken", instance=instance, snapshot=snapshot["snapshot_id"])
        return PhaseResult(f"RDS snapshot {snapshot['snapshot_id']} of {instance} available")

    def finish(self, ctx: Context, state: str) -> None:
        """After a completed or aborted window the standby copy has served its purpose; after
        a rollback it is production, and after needs_attention a person may want it. This
        run's slot, subscription and publications go at every end."""
        following.finish(ctx)
        if state not in ("completed", "aborted"):
            return
        name = standby_name(ctx.target.dbname, ctx.run_id)
        with ctx.maintenance(ctx.target) as conn:
            if databases.exists(conn, name):
                databases.drop(conn, name)
                ctx.log.info("standby_dropped", database=name)

    @staticmethod
    def _start_over(ctx: Context, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        archive.manifest_path(path).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)

    def _prove(self, ctx: Context, path: Path, facts: BackupFacts
               ) -> tuple[str, list[RecomputedView]]:
        """The standby copy, restored and compared; the views its restore recomputed."""
        name = standby_name(ctx.target.dbname, ctx.run_id)
        figures = facts["tables"]
        with ctx.maintenance(ctx.target) as conn:
            took = restore_into_new_database(ctx, conn, path, name, like=ctx.target.dbname,
                                             tables=len(figures))
            ctx.log.info("backup_restored", database=name, duration_s=round(took, 3))
            started = time.monotonic()
            recomputed = compare_with_backup(ctx, ctx.target.on(name), figures,
                                             views=facts.get("materialized_views", {}))
            ctx.log.info("backup_verified", database=name,
                         duration_s=round(time.monotonic() - started, 3))
            seal(conn, name, marker(ctx.run_id, figures))
        return name, recomputed

    @staticmethod
    def _check_contents(ctx: Context, path: Path, tables: list[pg.Table], major: int) -> None:
        command = [str(tools.find("pg_restore", major)), "--list", str(path)]
        toc = path.with_name(f"{path.name}.toc")  # read whole: MBs on a wide schema
        try:
            result = ctx.run_command(command, db=ctx.target, env=tool_env(ctx, ctx.target),
                                     label="pg_restore --list", stdout_to=toc)
            if result.exit_code != 0:
                raise PhaseFailed(f"the archive's table of contents does not read: "
                                  f"{proc.tail(result.output)}")
            # "3348; 0 16394 TABLE DATA public orders owner": the third field is the table's
            # oid, which, unlike the names, cannot contain spaces. A materialized view's entry
            # reads "MATERIALIZED VIEW DATA": a REFRESH, no rows, and not required here.
            with toc.open(encoding="utf-8", errors="replace") as lines:
                listed = {int(line.split()[2]) for line in lines
                          if " TABLE DATA " in line and not line.startswith(";")}
        finally:
            toc.unlink(missing_ok=True)
        missing = [t.qualified for t in tables if t.oid not in listed]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise PhaseFailed(f"the archive lacks data for {len(missing)} of {len(tables)}"
                              f" tables: {', '.join(missing[:10])}{more}")


def _said(words: str) -> str:
    return f"; {words}" if words else ""


def recomputed_summary(views: list[RecomputedView]) -> str:
    """The summary's words for the views the restore gave back with other contents."""
    if not views:
        return ""
    return ("; materialized views the restore recomputed (stale at the backup; a rollback gives"
            " them back recomputed): " + ", ".join(recomputed_words(v) for v in views))
