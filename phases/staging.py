"""Staging dry-run: the production migration and every check, rehearsed first (on staging,
or on a fresh copy of production: see ``orchestrator.toolkit.rehearsal``), then the timeline
validated against what the rehearsal measured.

A failure here ends the window in ``aborted``: production and the banner were never touched.
"""

from __future__ import annotations

from typing import Any

from orchestrator.config import Settings
from orchestrator.engine.context import Context
from orchestrator.engine.facts import REHEARSAL, REHEARSAL_REUSED, REHEARSAL_SKIPPED
from orchestrator.engine.phase import PhaseResult
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import migrations
from orchestrator.toolkit import rehearsal


def timeline_problems(settings: Settings, measured: dict[str, Any]) -> list[str]:
    """Why the rehearsed figures do not fit the window's timeouts, one sentence each."""
    problems = []
    migrate_s, timeout = float(measured["migrate_s"]), settings.timeout("migrate")
    allowed = settings.staging.max_migrate_share
    if migrate_s > allowed * timeout:
        problems.append(
            f"the rehearsed migration took {migrate_s:.1f}s, {migrate_s / timeout:.0%} of the"
            f" {timeout:g}s migrate timeout (at most {allowed:.0%}: [staging]"
            " max_migrate_share); raise [timeouts] migrate or make the migration faster")
    restore_s, rollback = measured.get("restore_s"), settings.timeout("rollback")
    if restore_s is not None and float(restore_s) > rollback:
        problems.append(
            f"the rehearsed restore of production took {float(restore_s):.1f}s, more than the"
            f" {rollback:g}s rollback timeout: a rollback could not finish in time; raise"
            " [timeouts] rollback")
    return problems


class StagingDryRun:
    name = "staging_dry_run"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.journal.get(ctx.run_id, REHEARSAL_SKIPPED):
            ctx.log.warning("rehearsal_skipped", risk="the migration was not rehearsed")
            return PhaseResult("skipped on purpose (--skip-staging): not rehearsed")
        if reused := ctx.journal.get(ctx.run_id, REHEARSAL_REUSED):
            return self._reuse(ctx, reused)
        fingerprint = migrations.fingerprint(ctx.settings)  # what is about to be rehearsed
        measured = rehearsal.rehearse(ctx)
        if problems := timeline_problems(ctx.settings, measured):
            raise PhaseFailed("; ".join(problems))
        measured["fingerprint"] = fingerprint
        ctx.journal.put(ctx.run_id, REHEARSAL, measured)
        ctx.journal.record_rehearsal(ctx.run_id, fingerprint=fingerprint, target=str(ctx.target),
                                     staging=str(ctx.staging), facts=measured)
        figures = ", ".join(f"{key.removesuffix('_s')} {measured[key]:.1f}s"
                            for key in ("dump_s", "restore_s", "migrate_s", "checks_s")
                            if key in measured)
        return PhaseResult(f"rehearsed on {measured['database']} ({measured['mode']}):"
                           f" {figures}", {"checks": measured["checks"]})

    @staticmethod
    def _reuse(ctx: Context, reused: dict[str, Any]) -> PhaseResult:
        """A recent rehearsal of the same files stands for this one, checked against this
        window's timeouts as a fresh one would be."""
        facts = {k: v for k, v in reused.items() if k not in ("id", "at")}
        if problems := timeline_problems(ctx.settings, facts):
            raise PhaseFailed("; ".join(problems))
        ctx.journal.put(ctx.run_id, REHEARSAL, {**facts, "reused_from": reused["id"]})
        ctx.log.info("rehearsal_reused", rehearsal=reused["id"])
        return PhaseResult(f"reused rehearsal {reused['id']} of the same migration files")

    def finish(self, ctx: Context, state: str) -> None:
        """A scratch copy an interrupted rehearsal left (the window then ended without
        rehearsing again: aborted, say) is dropped; it holds production's data."""
        if ctx.settings.staging.mode == "clone" and \
                ctx.journal.phase(ctx.run_id, self.name).attempts:
            rehearsal.remove_clone(ctx.shielded(rehearsal.CLEANUP_SECONDS))
