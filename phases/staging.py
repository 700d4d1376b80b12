"""Staging dry-run: the production migration and every check, rehearsed on staging first.

A failure here ends the window in ``aborted``: production and the banner were never touched.
"""

from __future__ import annotations

from orchestrator.context import Context
from phases import checks
from phases.base import PhaseResult
from phases.migrate import run_migration


class StagingDryRun:
    name = "staging_dry_run"

    def run(self, ctx: Context) -> PhaseResult:
        run_migration(ctx, ctx.staging)
        ctx.log.info("staging_migrated", database=str(ctx.staging))
        outcomes = checks.run_all(ctx, ctx.staging, migrate_phase=self.name)
        return PhaseResult(f"rehearsed on {ctx.staging}", {"checks": len(outcomes)})
