"""Post-check: every ``[[checks]]`` entry against production; one failure rolls back."""

from __future__ import annotations

from orchestrator.context import Context
from phases import checks
from phases.base import PhaseResult


class PostCheck:
    name = "post_check"

    def run(self, ctx: Context) -> PhaseResult:
        outcomes = checks.run_all(ctx, ctx.target, migrate_phase="migrate")
        return PhaseResult(f"{len(outcomes)} check(s) passed on {ctx.target}")
