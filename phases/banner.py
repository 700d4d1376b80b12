"""The maintenance banner: the user's commands to put it up and take it down.

Putting it up either works or is undone at once (a half-raised banner is taken down before
the window aborts). Taking it down retries within the phase's deadline: after a good
migration, or a good rollback, a stuck banner is the only thing left between users and a
working site.
"""

from __future__ import annotations

import time

import psycopg

from orchestrator import pg, rehearsals
from orchestrator.config import Command
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases import baseline
from phases.base import PhaseResult
from phases.migrate import tail

OFF_ATTEMPTS = 3


def _switch(ctx: Context, command: Command, what: str) -> None:
    result = ctx.run_command(command, db=ctx.target)
    if result.exit_code != 0:
        raise PhaseFailed(f"banner {what} command exited {result.exit_code}: {tail(result.output)}")


class BannerOn:
    """Raises the banner. If it fails half-way, the runner takes it down again before the
    window aborts (as for every abort once the banner may be up). The performance baseline is
    measured first, while production still serves its usual traffic."""

    name = "banner_on"

    def run(self, ctx: Context) -> PhaseResult:
        rehearsals.check_unchanged(ctx.settings, ctx.journal, ctx.run_id,
                                   "the banner was not raised")
        baseline.record_before(ctx, ctx.target)
        _switch(ctx, ctx.settings.banner.on, "on")
        ctx.log.info("banner_raised")
        if ctx.journal.run(ctx.run_id).backup_when == "before_banner":
            self._count_writes(ctx)
        return PhaseResult("banner on")

    @staticmethod
    def _count_writes(ctx: Context) -> None:
        """The write counters once users are held off: with the backup's, they tell what a
        rollback would discard."""
        time.sleep(ctx.settings.backup.write_stats_settle)
        try:
            with ctx.connect(ctx.target) as conn:
                ctx.journal.put(ctx.run_id, "writes_at_banner", pg.write_counters(conn))
        except (PhaseFailed, psycopg.Error) as exc:  # a report, not a reason to stop
            ctx.log.warning("write_counters_unavailable", error=str(exc))


class BannerOff:
    name = "banner_off"

    def run(self, ctx: Context) -> PhaseResult:
        attempt = 1
        while True:
            try:
                _switch(ctx, ctx.settings.banner.off, "off")
                break
            except PhaseFailed as exc:
                ctx.log.warning("banner_off_failed", attempt=attempt, error=exc.message)
                if attempt == OFF_ATTEMPTS or ctx.remaining() < attempt:
                    raise
                time.sleep(attempt)
                attempt += 1
        ctx.log.info("banner_lowered")
        return PhaseResult("banner off")


class RollbackBannerOff(BannerOff):
    name = "rollback_banner_off"
