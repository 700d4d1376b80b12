"""The window's states and the only ways between them.

transitions sequences; it never acts. No callbacks here: phases run outside the machine and
the runner fires ``succeeded`` / ``failed`` / ``timed_out`` / ``abort`` with their result.
``auto_transitions=False`` means no ``to_<state>()`` exists to skip a phase. A resumed window
rebuilds the machine with ``initial=`` the journal's state.
"""

from __future__ import annotations

import functools
from enum import StrEnum

from orchestrator.errors import ExitCode


class State(StrEnum):
    PREFLIGHT = "preflight"
    STAGING_DRY_RUN = "staging_dry_run"
    BACKUP = "backup"
    BANNER_ON = "banner_on"
    MIGRATE = "migrate"
    POST_CHECK = "post_check"
    BANNER_OFF = "banner_off"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLBACK = "rollback"
    ROLLBACK_BANNER_OFF = "rollback_banner_off"
    ROLLED_BACK = "rolled_back"
    NEEDS_ATTENTION = "needs_attention"


S = State
BEFORE_BANNER = "before_banner"
FORWARD = [S.PREFLIGHT, S.STAGING_DRY_RUN, S.BACKUP, S.BANNER_ON, S.MIGRATE, S.POST_CHECK,
           S.BANNER_OFF]
RECOVERY = [S.ROLLBACK, S.ROLLBACK_BANNER_OFF]
PHASES = [*FORWARD, *RECOVERY]
TERMINAL = frozenset({S.COMPLETED, S.ABORTED, S.ROLLED_BACK, S.NEEDS_ATTENTION})
RETRYABLE = (S.BANNER_OFF, S.ROLLBACK, S.ROLLBACK_BANNER_OFF)  # their failure: needs attention
SETTLED = frozenset({S.COMPLETED, S.ABORTED, S.ROLLED_BACK})  # nobody needs its leftovers
# Phases that keep their first deadline across restarts (time away counts against the window);
# the banner and recovery phases get a fresh one whenever they are (re-)entered.
KEEPS_DEADLINE = frozenset({S.PREFLIGHT, S.STAGING_DRY_RUN, S.BACKUP, S.MIGRATE, S.POST_CHECK})

EXIT_CODES = {S.COMPLETED: ExitCode.COMPLETED, S.ROLLED_BACK: ExitCode.FAILED,
              S.ABORTED: ExitCode.REFUSED, S.NEEDS_ATTENTION: ExitCode.NEEDS_ATTENTION}


def forward(when: str = BEFORE_BANNER) -> list[State]:
    """The forward phases in order: ``[backup] when = "after_banner"`` raises the banner first,
    so no write can land between the backup and the migration (at the cost of downtime)."""
    if when == BEFORE_BANNER:
        return list(FORWARD)
    return [S.PREFLIGHT, S.STAGING_DRY_RUN, S.BANNER_ON, S.BACKUP, S.MIGRATE, S.POST_CHECK,
            S.BANNER_OFF]


def phases(when: str = BEFORE_BANNER) -> list[State]:
    return [*forward(when), *RECOVERY]


@functools.cache
def transitions(when: str = BEFORE_BANNER) -> tuple[dict[str, object], ...]:
    """Everything before ``migrate`` fails into ``aborted`` (production unchanged); an abort
    does too until the backup exists, and rolls back after it. A phase that cannot undo
    itself (a banner that will not come down) is ``stuck``: a person must look."""
    order = forward(when)
    before_migrate = order[:order.index(S.MIGRATE)]
    through_backup = order[:order.index(S.BACKUP) + 1]
    table: list[dict[str, object]] = [
        {"trigger": "succeeded", "source": here, "dest": after}
        for here, after in zip([*order, *RECOVERY],
                               [*order[1:], S.COMPLETED, S.ROLLBACK_BANNER_OFF, S.ROLLED_BACK],
                               strict=True)]
    failure_dest = {
        **dict.fromkeys(before_migrate, S.ABORTED),
        S.MIGRATE: S.ROLLBACK,
        S.POST_CHECK: S.ROLLBACK,
        S.BANNER_OFF: S.NEEDS_ATTENTION,
        S.ROLLBACK: S.NEEDS_ATTENTION,
        S.ROLLBACK_BANNER_OFF: S.NEEDS_ATTENTION,
    }
    for trigger in ("failed", "timed_out"):
        table += [{"trigger": trigger, "source": s, "dest": d} for s, d in failure_dest.items()]
    table += [
        {"trigger": "abort", "source": through_backup, "dest": S.ABORTED},
        {"trigger": "abort", "source": [s for s in order if s not in through_backup],
         "dest": S.ROLLBACK},
        {"trigger": "stuck", "source": before_migrate, "dest": S.NEEDS_ATTENTION},
        # A rollback paused on writes it would discard, until someone accepts the loss.
        {"trigger": "accept_data_loss", "source": S.NEEDS_ATTENTION, "dest": S.ROLLBACK},
    ]
    # `window resume` / `abort` try again the phase that left a person to act, once what
    # stopped it is gone (a session it could not end, a banner command that failed).
    table += [{"trigger": f"retry_{p}", "source": S.NEEDS_ATTENTION, "dest": p}
              for p in RETRYABLE]
    return tuple(table)


class Window:
    """The model: transitions keeps ``state`` on it; ``fire`` is the one way to move."""

    state: str

    def __init__(self, initial: str, when: str = BEFORE_BANNER) -> None:
        from transitions import Machine  # only to move: `window status` reads the tables

        self._machine = Machine(
            model=self,
            states=list(State),
            transitions=list(transitions(when)),
            initial=State(initial),
            auto_transitions=False,
            queued=True,
            ignore_invalid_triggers=False,
        )

    def fire(self, trigger: str) -> str:
        """Move along ``trigger``; MachineError if it does not lead anywhere from here."""
        self._machine.events[trigger].trigger(self)
        return str(self.state)


def build(initial: str = S.PREFLIGHT, when: str = BEFORE_BANNER) -> Window:
    return Window(initial, when)


def destination(state: str, trigger: str, when: str = BEFORE_BANNER) -> str | None:
    """Where ``trigger`` leads from ``state``, without moving anything."""
    for t in transitions(when):
        if t["trigger"] == trigger and state in _as_list(t["source"]):
            return str(t["dest"])
    return None


def can(state: str, trigger: str, when: str = BEFORE_BANNER) -> bool:
    """Whether ``trigger`` leads anywhere from ``state`` (abort during rollback does not)."""
    return destination(state, trigger, when) is not None


def _as_list(source: object) -> list[str]:
    return [str(s) for s in source] if isinstance(source, list) else [str(source)]
