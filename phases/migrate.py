"""Migrate: drain production, then the configured migration command, with ``DATABASE_URL``
set to production.

The staging rehearsal runs the same command through ``run_migration`` with staging's URL.
"""

from __future__ import annotations

from orchestrator.engine import rehearsals
from orchestrator.engine.context import Context
from orchestrator.engine.phase import PhaseResult
from orchestrator.toolkit.drain import drain
from orchestrator.toolkit.migration import run_migration


class Migrate:
    name = "migrate"

    def run(self, ctx: Context) -> PhaseResult:
        rehearsals.check_unchanged(ctx.settings, ctx.journal, ctx.run_id,
                                   "nothing was run on production")
        drain(ctx, ctx.target)
        output = run_migration(ctx, ctx.target)
        ctx.log.info("migration_applied", database=str(ctx.target))
        return PhaseResult(f"migrated {ctx.target}", {"output": output})
