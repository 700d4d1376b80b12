"""Rollback: production ends up holding exactly what the backup holds, and the evidence stays.

``pg_restore --clean`` would leave behind every object the migration created, so the backup is
restored into a new database, its row counts are checked against the backup's, and then the
names are swapped: production becomes ``<db>_failed_<run_id>`` (kept, never dropped) and the
restored copy becomes production. Each step looks at what exists first, so a rollback that was
interrupted anywhere picks up where it stopped; a half-finished restore starts over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from orchestrator import pg, pgtools
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases.backup import tool_env
from phases.base import PhaseResult
from phases.migrate import tail

NAME_LIMIT = 63  # PostgreSQL's identifier length


def retained_name(dbname: str, run_id: str) -> str:
    return _suffixed(dbname, f"_failed_{run_id}")


def restore_name(dbname: str, run_id: str) -> str:
    return _suffixed(dbname, f"_window_{run_id}")


def _suffixed(dbname: str, suffix: str) -> str:
    return dbname[: NAME_LIMIT - len(suffix)] + suffix


class Rollback:
    name = "rollback"

    def run(self, ctx: Context) -> PhaseResult:
        run = ctx.journal.run(ctx.run_id)
        expected = ctx.journal.backup_tables(ctx.run_id)
        if not run.backup_path or not Path(run.backup_path).is_dir():
            raise PhaseFailed(f"no backup archive to restore from ({run.backup_path})")
        name = ctx.target.dbname
        retained, copy = retained_name(name, ctx.run_id), restore_name(name, ctx.run_id)
        with ctx.maintenance(ctx.target) as conn:
            if reopened := pg.reopen_closed(conn, [name, retained, copy]):
                ctx.log.warning("connections_reopened", databases=reopened)
            if pg.database_exists(conn, retained) and not pg.database_exists(conn, copy):
                if pg.database_exists(conn, name):  # the swap already happened
                    self._verify(ctx, ctx.target, expected)
                    return self._done(ctx, retained)
                raise PhaseFailed(f"neither {name} nor its restored copy exists")
            if not pg.database_exists(conn, retained):
                self._restore(ctx, conn, Path(run.backup_path), copy, like=name)
            self._verify(ctx, ctx.target.on(copy), expected)
            if pg.database_exists(conn, name):
                pg.rename_database(conn, name, retained, ctx.deadline)
                ctx.log.info("production_retained", database=retained)
            pg.rename_database(conn, copy, name, ctx.deadline)
        return self._done(ctx, retained)

    @staticmethod
    def _done(ctx: Context, retained: str) -> PhaseResult:
        ctx.log.info("production_restored", database=ctx.target.dbname, retained=retained)
        return PhaseResult(f"production restored; failed database kept as {retained}",
                           {"retained_database": retained})

    @staticmethod
    def _restore(ctx: Context, conn: psycopg.Connection[Any], archive: Path, copy: str,
                 like: str) -> None:
        pg.drop_database(conn, copy)  # a restore interrupted mid-way starts over
        source = like if pg.database_exists(conn, like) else ctx.settings.target.maintenance_db
        pg.create_database_like(conn, copy, like=source)
        if skipped := pg.copy_database_properties(conn, source, copy):
            ctx.log.warning("database_settings_not_copied", settings=skipped)
        target = ctx.target.on(copy)
        command = [str(pgtools.find("pg_restore", pg.server_major(conn))),
                   f"--jobs={ctx.settings.backup.jobs}", "--exit-on-error",
                   f"--dbname={copy}", str(archive)]
        result = ctx.run_command(command, db=target, env=tool_env(ctx, target),
                                 label="pg_restore")
        if result.exit_code != 0:
            raise PhaseFailed(f"pg_restore exited {result.exit_code}: {tail(result.output)}")
        ctx.log.info("backup_restored", database=copy)

    @staticmethod
    def _verify(ctx: Context, db: pg.Db, expected: dict[str, int]) -> None:
        with ctx.connect(db) as conn:
            actual = pg.row_counts(conn)
        wrong = {t: (expected.get(t), actual.get(t)) for t in {*expected, *actual}
                 if expected.get(t) != actual.get(t)}
        if wrong:
            shown = ", ".join(f"{t} backup {e} restored {a}" for t, (e, a) in sorted(wrong.items()))
            raise PhaseFailed(f"restored copy {db} differs from the backup: {shown}")
        ctx.log.info("restore_verified", database=str(db), tables=len(expected))
