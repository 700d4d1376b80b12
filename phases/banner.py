"""The maintenance banner: the user's commands to put it up and take it down.

Putting it up either works or is undone at once (a half-raised banner is taken down before
the window aborts). Taking it down retries within the phase's deadline: after a good
migration, or a good rollback, a stuck banner is the only thing left between users and a
working site.
"""

from __future__ import annotations

import time

from orchestrator.config import Command
from orchestrator.context import Context
from orchestrator.errors import PhaseError, PhaseFailed
from phases.base import PhaseResult
from phases.migrate import tail

OFF_ATTEMPTS = 3


def _switch(ctx: Context, command: Command, what: str) -> None:
    result = ctx.run_command(command, db=ctx.target)
    if result.exit_code != 0:
        raise PhaseFailed(f"banner {what} command exited {result.exit_code}: {tail(result.output)}")


class BannerOn:
    name = "banner_on"

    def run(self, ctx: Context) -> PhaseResult:
        try:
            _switch(ctx, ctx.settings.banner.on, "on")
        except PhaseError:
            self._take_down(ctx)
            raise
        ctx.log.info("banner_raised")
        return PhaseResult("banner on")

    @staticmethod
    def _take_down(ctx: Context) -> None:
        try:
            _switch(ctx, ctx.settings.banner.off, "off")
        except PhaseError as exc:
            ctx.log.error("banner_not_lowered", error=exc.message)  # noqa: TRY400 - no trace


class BannerOff:
    name = "banner_off"

    def run(self, ctx: Context) -> PhaseResult:
        for attempt in range(1, OFF_ATTEMPTS + 1):
            try:
                _switch(ctx, ctx.settings.banner.off, "off")
            except PhaseFailed as exc:
                ctx.log.warning("banner_off_failed", attempt=attempt, error=exc.message)
                if attempt == OFF_ATTEMPTS or ctx.remaining() < attempt:
                    raise
                time.sleep(attempt)
            else:
                ctx.log.info("banner_lowered")
                return PhaseResult("banner off")
        raise PhaseFailed("banner off did not succeed")  # unreachable: the loop raises or returns


class RollbackBannerOff(BannerOff):
    name = "rollback_banner_off"
