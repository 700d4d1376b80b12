"""Migrate: drain production, let the standby that follows it catch up and let go
(``toolkit/following.py``), then the configured migration command, with ``DATABASE_URL``
set to production.

The staging rehearsal runs the same command through ``run_migration`` with staging's URL.
"""

from __future__ import annotations

from orchestrator.engine import rehearsals
from orchestrator.engine.context import Context
from orchestrator.engine.facts import FOLLOW, MIGRATION, MigrationFacts, follow_words
from orchestrator.engine.phase import PhaseResult
from orchestrator.postgres.migrations import named
from orchestrator.redact import redact
from orchestrator.toolkit import following
from orchestrator.toolkit.drain import drain
from orchestrator.toolkit.migration import newly_applied, run_migration, tool_state


class Migrate:
    name = "migrate"

    def run(self, ctx: Context) -> PhaseResult:
        rehearsals.check_unchanged(ctx.settings, ctx.journal, ctx.run_id,
                                   "nothing was run on production")
        drain(ctx, ctx.target)
        # Production quiet behind the banner: the standby applies the rest, then lets go.
        if fell_back := following.catch_up(ctx):
            ctx.log.warning("rollback_would_lose_writes", reason=fell_back)
        followed = follow_words(ctx.journal.get(ctx.run_id, FOLLOW))
        before = tool_state(ctx, ctx.target)
        output = redact(run_migration(ctx, ctx.target))
        after = tool_state(ctx, ctx.target)
        applied = newly_applied(before, after) if before and after else None
        ctx.journal.put(ctx.run_id, MIGRATION, MigrationFacts(applied=applied, output=output))
        ctx.log.info("migration_applied", database=str(ctx.target), applied=applied)
        said = f": applied {named(applied)}" if applied else \
            " (its table records nothing new)" if applied == [] else ""
        return PhaseResult(f"migrated {ctx.target}{said}" + (f"; {followed}" if followed else ""),
                           {"output": output})
