"""The window's states and the only ways between them.

transitions sequences; it never acts. No callbacks here: phases run outside the machine and
the runner fires ``succeeded`` / ``failed`` / ``timed_out`` / ``abort`` with their result.
``auto_transitions=False`` means no ``to_<state>()`` exists to skip a phase. A resumed window
rebuilds the machine with ``initial=`` the journal's state.
"""

from __future__ import annotations

from enum import StrEnum

from transitions import Machine


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
FORWARD = [S.PREFLIGHT, S.STAGING_DRY_RUN, S.BACKUP, S.BANNER_ON, S.MIGRATE, S.POST_CHECK,
           S.BANNER_OFF]
RECOVERY = [S.ROLLBACK, S.ROLLBACK_BANNER_OFF]
PHASES = [*FORWARD, *RECOVERY]
TERMINAL = frozenset({S.COMPLETED, S.ABORTED, S.ROLLED_BACK, S.NEEDS_ATTENTION})
BEFORE_PRODUCTION = (S.PREFLIGHT, S.STAGING_DRY_RUN, S.BACKUP)
PRODUCTION_AT_RISK = (S.BANNER_ON, S.MIGRATE, S.POST_CHECK, S.BANNER_OFF)
# Phases that keep their first deadline across restarts (time away counts against the window);
# the banner and recovery phases get a fresh one whenever they are (re-)entered.
KEEPS_DEADLINE = frozenset({S.PREFLIGHT, S.STAGING_DRY_RUN, S.BACKUP, S.MIGRATE, S.POST_CHECK})

EXIT_CODES = {S.COMPLETED: 0, S.ROLLED_BACK: 1, S.ABORTED: 3, S.NEEDS_ATTENTION: 4}


def _transitions() -> list[dict[str, object]]:
    table: list[dict[str, object]] = []
    for here, after in zip([*FORWARD, *RECOVERY], [*FORWARD[1:], S.COMPLETED,
                                                   S.ROLLBACK_BANNER_OFF, S.ROLLED_BACK],
                           strict=True):
        table.append({"trigger": "succeeded", "source": here, "dest": after})
    failure_dest = {
        **dict.fromkeys((*BEFORE_PRODUCTION, S.BANNER_ON), S.ABORTED),
        S.MIGRATE: S.ROLLBACK,
        S.POST_CHECK: S.ROLLBACK,
        S.BANNER_OFF: S.NEEDS_ATTENTION,
        S.ROLLBACK: S.NEEDS_ATTENTION,
        S.ROLLBACK_BANNER_OFF: S.NEEDS_ATTENTION,
    }
    for trigger in ("failed", "timed_out"):
        table += [{"trigger": trigger, "source": s, "dest": d} for s, d in failure_dest.items()]
    table += [{"trigger": "abort", "source": list(BEFORE_PRODUCTION), "dest": S.ABORTED},
              {"trigger": "abort", "source": list(PRODUCTION_AT_RISK), "dest": S.ROLLBACK},
              # The banner went up but would not come down again: a person must look.
              {"trigger": "stuck", "source": S.BANNER_ON, "dest": S.NEEDS_ATTENTION},
              # A rollback paused on writes it would discard, until someone accepts the loss.
              {"trigger": "accept_data_loss", "source": S.NEEDS_ATTENTION, "dest": S.ROLLBACK}]
    return table


TRANSITIONS = _transitions()


class Window:
    """The model: transitions keeps ``state`` on it; ``fire`` is the one way to move."""

    state: str

    def __init__(self, initial: str) -> None:
        self._machine = Machine(
            model=self,
            states=list(State),
            transitions=TRANSITIONS,
            initial=State(initial),
            auto_transitions=False,
            queued=True,
            ignore_invalid_triggers=False,
        )

    def fire(self, trigger: str) -> str:
        """Move along ``trigger``; MachineError if it does not lead anywhere from here."""
        self._machine.events[trigger].trigger(self)
        return str(self.state)


def build(initial: str = S.PREFLIGHT) -> Window:
    return Window(initial)


def can(state: str, trigger: str) -> bool:
    """Whether ``trigger`` leads anywhere from ``state`` (abort during rollback does not)."""
    return any(t["trigger"] == trigger and state in _as_list(t["source"]) for t in TRANSITIONS)


def _as_list(source: object) -> list[str]:
    return [str(s) for s in source] if isinstance(source, list) else [str(source)]
