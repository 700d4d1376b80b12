"""Migrate: drain production, then the configured migration command, with ``DATABASE_URL``
set to production.

The staging rehearsal runs the same command through ``run_migration`` with staging's URL.
"""

from __future__ import annotations

from orchestrator.engine import rehearsals
from orchestrator.engine.context import Context
from orchestrator.engine.facts import MIGRATION, MigrationFacts
from orchestrator.engine.phase import PhaseResult
from orchestrator.postgres.migrations import named
from orchestrator.redact import redact
from orchestrator.toolkit.drain import drain
from orchestrator.toolkit.migration import newly_applied, run_migration, tool_state


class Migrate:
    name = "migrate"

    def run(self, ctx: Context) -> PhaseResult:
        rehearsals.check_unchanged(ctx.settings, ctx.journal, ctx.run_id,
                                   "nothing was run on production")
        drain(ctx, ctx.target)
        before = tool_state(ctx, ctx.target)
        output = redact(run_migration(ctx, ctx.target))
        after = tool_state(ctx, ctx.target)
        applied = newly_applied(before, after) if before and after else None
        ctx.journal.put(ctx.run_id, MIGRATION, MigrationFacts(applied=applied, output=output))
        ctx.log.info("migration_applied", database=str(ctx.target), applied=applied)
        said = f": applied {named(applied)}" if applied else \
            " (its table records nothing new)" if applied == [] else ""
        return PhaseResult(f"migrated {ctx.target}{said}", {"output": output})
