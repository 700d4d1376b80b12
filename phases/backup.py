"""Backup: a parallel directory-format dump of production, described exactly.

A REPEATABLE READ transaction exports its snapshot and stays open while ``pg_dump --snapshot``
dumps that same snapshot, so the row counts taken in the transaction describe exactly what the
archive holds. The archive's table of contents must read back and hold every counted table.
Re-entering the phase (after an interrupt) starts the dump over in an empty folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from psycopg import IsolationLevel

from orchestrator import pg, pgtools
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases.base import PhaseResult
from phases.migrate import tail


def archive_path(ctx: Context) -> Path:
    return ctx.settings.path(ctx.settings.backup.dir) / ctx.run_id


def tool_env(ctx: Context, db: pg.Db) -> dict[str, str]:
    """libpq's variables for pg_dump / pg_restore: the password never lands in argv."""
    env = ctx.command_env(db)
    env.update(db.libpq_env())
    env["PGAPPNAME"] = ctx.app_name
    return env


class Backup:
    name = "backup"

    def run(self, ctx: Context) -> PhaseResult:
        path = archive_path(ctx)
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with ctx.connect(ctx.target, autocommit=False) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = str(row[0]) if row else ""
            tables = pg.user_tables(conn)
            counts = pg.row_counts(conn, tables)
            major = pg.server_major(conn)
            self._dump(ctx, path, snapshot, major)
            conn.rollback()
        self._check_contents(ctx, path, tables, major)
        ctx.journal.set_backup(ctx.run_id, str(path), counts)
        ctx.log.info("backup_taken", path=str(path), tables=len(counts),
                     rows=sum(counts.values()))
        return PhaseResult(f"{len(counts)} tables dumped to {path}", {"tables": counts})

    @staticmethod
    def _dump(ctx: Context, path: Path, snapshot: str, major: int) -> None:
        settings = ctx.settings.backup
        command = [str(pgtools.find("pg_dump", major)), "--format=directory",
                   f"--jobs={settings.jobs}", f"--snapshot={snapshot}",
                   f"--compress={settings.compress}", f"--file={path}"]
        result = ctx.run_command(command, db=ctx.target, env=tool_env(ctx, ctx.target),
                                 label="pg_dump")
        if result.exit_code != 0:
            raise PhaseFailed(f"pg_dump exited {result.exit_code}: {tail(result.output)}")

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
