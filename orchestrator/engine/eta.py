"""How long a window should take, and until when a rollback still fits inside it.

Each forward phase is expected to take what the rehearsal measured for it (the dry-run
itself, the migration, the checks; in clone mode the dump and restore a backup repeats),
else the runbook's timeline, taking the LOWER bound of each range (a window rarely goes
faster), never more than the phase's timeout. The window lasts ``[window] length``, else the
sum of the forward phases' timeouts. The point of no return is the latest moment from which
a rollback (the rehearsed restore, else the rollback timeout; then the banner coming down)
still ends inside that length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.engine.machine import FORWARD, forward

if TYPE_CHECKING:
    from orchestrator.config import Settings

# The runbook's timeline (config/defaults.toml names its ranges), lower bounds in seconds:
# staging dry-run 10-15 min, backup 5-10, production execution 2-5, post-validation 5.
# Preflight and the banner commands are not in it: each is a few quick round trips.
TIMELINE: dict[str, float] = {
    "preflight": 10.0,
    "staging_dry_run": 600.0,
    "backup": 300.0,
    "banner_on": 10.0,
    "migrate": 120.0,
    "post_check": 300.0,
    "banner_off": 10.0,
    "rollback_banner_off": 10.0,
}


@dataclass(frozen=True)
class Eta:
    phases: dict[str, float]  # each forward phase, in the window's order: expected seconds
    measured: frozenset[str]  # the phases whose figure was measured, not the timeline's
    source: str  # "rehearsal" when a rehearsal measured anything, else "timeline"
    length_s: float
    rollback_s: float  # restore (rehearsed, else its timeout) and the banner coming down

    @property
    def expected_s(self) -> float:
        return sum(self.phases.values())

    @property
    def point_of_no_return_s(self) -> float:
        """Offset from the window's start; negative when no rollback fits at all."""
        return self.length_s - self.rollback_s

    def ends_s(self, phase: str) -> float:
        """When ``phase`` is expected to end, as an offset from the window's start."""
        names = list(self.phases)
        return sum(self.phases[name] for name in names[:names.index(phase) + 1])


def rehearsed(rehearsal: dict[str, Any] | None, verify: str = "restore") -> dict[str, float]:
    """Expected seconds for the phases a rehearsal measured."""
    if not rehearsal:
        return {}
    figures = {"staging_dry_run": rehearsal.get("total_s"),
               "migrate": rehearsal.get("migrate_s"), "post_check": rehearsal.get("checks_s")}
    if rehearsal.get("dump_s") is not None:  # the backup dumps the same data (and restores it)
        restore = float(rehearsal.get("restore_s") or 0) if verify == "restore" else 0.0
        figures["backup"] = float(rehearsal["dump_s"]) + restore
    return {phase: float(value) for phase, value in figures.items() if value is not None}


def length(settings: Settings) -> float:
    return settings.window.length or sum(settings.timeout(p) for p in FORWARD)


def estimate(settings: Settings, rehearsal: dict[str, Any] | None = None,
             actual: dict[str, float] | None = None) -> Eta:
    """The ETA from a rehearsal's figures (or none); ``actual`` durations of phases that
    already ran take precedence over any estimate."""
    measured = rehearsed(rehearsal, settings.backup.verify)
    done = actual or {}
    phases = {str(p): done[p] if p in done else min(measured.get(p, TIMELINE[p]),
                                                    settings.timeout(p))
              for p in forward(settings.backup.when)}
    restore = rehearsal.get("restore_s") if rehearsal else None
    rollback = float(restore) if restore is not None else settings.timeout("rollback")
    banner_off = min(TIMELINE["rollback_banner_off"], settings.timeout("rollback_banner_off"))
    return Eta(phases, frozenset({*measured, *done} & set(phases)),
               "rehearsal" if measured else "timeline", length(settings), rollback + banner_off)


def shown(seconds: float) -> str:
    """A duration for people: 0.4s, 45s, 2m05s, 1h02m10s (negative with a minus)."""
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if round(seconds, 1) < 10:
        return f"{sign}{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s" if minutes else f"{sign}{secs}s"
