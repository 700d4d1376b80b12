"""Preflight: everything the window will need is there before anything is touched.

Production and staging answer (a cold serverless database gets bounded retries), they are
not the same database (as the servers say, whatever the URLs), pg_dump and pg_restore are
new enough for production's server, the backup folder is writable, and this role may roll
production back (create the copy, rename production, end the sessions in the way): a window
that could not roll back stops here, before the rehearsal touches staging. The cluster's
roles, memberships, settings and tablespaces are recorded, for the rollback to say what no
restore undoes.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from orchestrator.engine import gates
from orchestrator.engine.context import Context
from orchestrator.engine.facts import CLUSTER_BEFORE, LOG_OFFSETS
from orchestrator.engine.phase import PhaseResult
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import cluster_state, pg, privileges, tools
from orchestrator.toolkit import probes


class Preflight:
    name = "preflight"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.target.dbname == ctx.settings.target.maintenance_db:
            raise PhaseFailed(
                f"production is the maintenance database {ctx.target.dbname!r}; set"
                " [target] maintenance_db to another database on the same server"
            )
        # One session on each database answers every question below (each connection costs
        # a password exchange and a server process).
        deadline = min(ctx.deadline, time.time() + ctx.settings.target.connect_timeout)
        with self._reach(ctx, ctx.staging, "staging", deadline) as staging, \
                self._reach(ctx, ctx.target, "production", deadline) as production:
            if not ctx.distinct_checked and ctx.settings.staging.needs_url:
                gates.distinct_on(ctx.settings, staging, production, target=ctx.target,
                                  staging=ctx.staging, refusal=PhaseFailed)
            versions = {str(ctx.target): pg.server_major(production),
                        str(ctx.staging): pg.server_major(staging)}
            major = versions[str(ctx.target)]
            programs = {name: str(tools.find(name, major)) for name in ("pg_dump", "pg_restore")}
            backup_dir = ctx.settings.path(ctx.settings.backup.dir)
            try:
                backup_dir.mkdir(parents=True, exist_ok=True)
                probe = backup_dir / f".write-test-{ctx.run_id}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise PhaseFailed(f"backup folder {backup_dir} is not writable: {exc}") from exc
            self._rollback_possible(ctx, production)
        if offsets := probes.log_offsets(ctx.settings):
            ctx.journal.put(ctx.run_id, LOG_OFFSETS, offsets)
        ctx.log.info("environment_checked", servers=versions, **programs)
        return PhaseResult("production and staging reachable", {"servers": versions, **programs})

    @staticmethod
    def _rollback_possible(ctx: Context, conn: psycopg.Connection[Any]) -> None:
        if ctx.settings.backup.method == "rds_snapshot":  # restored by AWS, to a new instance
            return
        path = privileges.rollback_path(
            conn, creates_databases=ctx.settings.backup.creates_databases)
        if ctx.journal.get(ctx.run_id, CLUSTER_BEFORE) is None:  # before the rehearsal
            ctx.journal.put(ctx.run_id, CLUSTER_BEFORE, cluster_state.record(conn))
        if path.lacks:
            raise PhaseFailed(path.refusal())
        for note in path.notes:
            ctx.log.warning("rollback_note", note=note)

    @staticmethod
    def _reach(ctx: Context, db: pg.Db, role: str, deadline: float
               ) -> psycopg.Connection[Any]:
        """A session on ``db``; a cold database is waited for, a line per attempt."""
        return pg.connect(db, deadline, poll=ctx.poll, waiting=gates.waiting_for(role, db))
