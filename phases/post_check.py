"""Post-check: every ``[[checks]]`` entry against production, and the performance baseline
measured again. Anything failing rolls back; the error names all of it at once, so the
engineer does not learn of a second problem only on the next attempt."""

from __future__ import annotations

from orchestrator.engine.context import Context
from orchestrator.engine.facts import BASELINE
from orchestrator.engine.phase import PhaseResult
from orchestrator.errors import PhaseFailed
from orchestrator.toolkit import baseline, checks


class PostCheck:
    name = "post_check"

    def run(self, ctx: Context) -> PhaseResult:
        failures: list[str] = []
        try:
            outcomes = checks.run_all(ctx, ctx.target, migrate_phase="migrate")
        except PhaseFailed as exc:
            failures.append(exc.message)
        try:
            failures += baseline.verify(ctx, ctx.target)
        except PhaseFailed as exc:
            failures.append(exc.message)
        if failures:
            raise PhaseFailed("; ".join(failures))
        result = ctx.journal.get(ctx.run_id, BASELINE)
        compared = len(result) if result else 0
        within = f", {compared} baseline entries compared" if compared else ""
        return PhaseResult(f"{len(outcomes)} check(s) passed on {ctx.target}{within}")
