"""Migrate: the configured migration command, with ``DATABASE_URL`` set to production.

The staging rehearsal runs the same command through ``run_migration`` with staging's URL.
"""

from __future__ import annotations

from orchestrator import pg
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases.base import PhaseResult

TAIL_LINES = 8


def run_migration(ctx: Context, db: pg.Db) -> str:
    settings = ctx.settings.migrate
    cwd = ctx.settings.path(settings.workdir) if settings.workdir else None
    result = ctx.run_command(settings.command, db=db, cwd=cwd)
    if result.exit_code != 0:
        raise PhaseFailed(
            f"migration on {db} exited {result.exit_code}: {tail(result.output)}"
        )
    return tail(result.output)


def tail(output: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


class Migrate:
    name = "migrate"

    def run(self, ctx: Context) -> PhaseResult:
        output = run_migration(ctx, ctx.target)
        ctx.log.info("migration_applied", database=str(ctx.target))
        return PhaseResult(f"migrated {ctx.target}", {"output": output})
