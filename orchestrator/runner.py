"""Drive a window from the state the journal holds to a terminal state.

The loop: look up the phase for the current state, journal its start (with an absolute
deadline), run it, journal how it ended, fire the matching event, journal the transition.
Signals and abort requests are noticed within a poll interval, also while a child runs.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

import structlog

from orchestrator import machine, pg, proc
from orchestrator.context import Context
from orchestrator.errors import AbortRequested, Interrupted, PhaseError
from orchestrator.journal import Journal
from orchestrator.machine import FORWARD, TERMINAL
from phases import Registry

ABORT_POLL_SECONDS = 0.25
STATUS_BY_EVENT = {"failed": "failed", "timed_out": "timed_out", "abort": "failed"}


@dataclass
class Signals:
    """SIGINT / SIGTERM set a flag; the poll turns it into ``Interrupted`` at a safe point."""

    received: list[int] = field(default_factory=list)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        # A query can block for minutes (a lock, a huge count): cancel it so the phase
        # returns now; the runner then reads whatever it raised as this interrupt.
        pg.cancel_running_queries()

    def pending(self) -> Interrupted | None:
        if not self.received:
            return None
        name = signal.Signals(self.received[0]).name
        return Interrupted(f"interrupted by {name}; `window resume` continues.")

    def check(self) -> None:
        if interrupt := self.pending():
            raise interrupt


def stop_orphans(journal: Journal, run_id: str) -> list[str]:
    """Stop every child a dead window process left running; what was stopped, by label."""
    stopped = []
    for child in journal.live_children(run_id):
        same = child.start_ticks is None or proc.start_ticks(child.pid) in (None, child.start_ticks)
        if same and proc.group_alive(child.pgid):
            proc.stop_group(child.pgid)
            stopped.append(child.label)
            structlog.get_logger().warning("orphan_stopped", pid=child.pid, command=child.label,
                                           phase=child.phase)
        journal.child_ended(child.id, None, "stopped: its window process had died")
    return stopped


class Runner:
    def __init__(self, base: Context, registry: Registry, signals: Signals) -> None:
        self.base = base
        self.journal = base.journal
        self.run_id = base.run_id
        self.registry = registry
        self.signals = signals
        self._state = ""
        self._next_abort_check = 0.0

    def drive(self) -> str:
        window = machine.build(self.journal.run(self.run_id).state)
        while window.state not in TERMINAL:
            self._state = str(window.state)
            self.signals.check()
            trigger = self._run_phase(self._state) if not self._abort_due() else "abort"
            source = self._state
            window.fire(trigger)
            self.journal.set_state(self.run_id, str(window.state), trigger, source)
            structlog.get_logger().info("state_changed", source=source, trigger=trigger,
                                        state=str(window.state))
        self.journal.skip_pending(self.run_id)
        return str(window.state)

    def poll(self) -> None:
        self.signals.check()
        if self._abort_due():
            raise AbortRequested("aborted by the operator (`window abort`)", phase=self._state)

    def _abort_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_abort_check:
            return False
        self._next_abort_check = now + ABORT_POLL_SECONDS
        return machine.can(self._state, "abort") and self.journal.abort_requested(self.run_id)

    def _deadline(self, name: str) -> float:
        """Forward phases keep the deadline they were given, across restarts; recovery phases
        (and banner_off) get a fresh one when re-entered, as giving up on them helps no one."""
        row = self.journal.phase(self.run_id, name)
        if name in FORWARD and name != "banner_off" and row.deadline and row.attempts:
            return row.deadline
        return time.time() + self.base.settings.timeout(name)

    def _run_phase(self, name: str) -> str:
        deadline = self._deadline(name)
        self.journal.start_phase(self.run_id, name, deadline, self.base.settings.timeout(name))
        ctx = self.base.for_phase(name, deadline, self.poll)
        log = structlog.get_logger().bind(phase=name)
        log.info("phase_started", timeout_s=self.base.settings.timeout(name))
        started = time.monotonic()
        if time.time() >= deadline:
            return self._ended(log, name, "timed_out",
                               "its deadline passed while the window was stopped", started)
        try:
            result = self.registry[name].run(ctx)
        except Interrupted as exc:
            self._interrupted(log, name, exc)
        except Exception as exc:
            if interrupt := self.signals.pending():  # a cancelled query, after a signal
                self._interrupted(log, name, interrupt)
            if isinstance(exc, PhaseError):
                return self._ended(log, name, exc.event, exc.message, started)
            # A bug or an unconverted error must not skip the rollback.
            log.exception("phase_crashed")
            return self._ended(log, name, "failed", f"{type(exc).__name__}: {exc}", started)
        self.journal.finish_phase(self.run_id, name, "succeeded")
        log.info("phase_succeeded", summary=result.summary,
                 duration_s=round(time.monotonic() - started, 3))
        return "succeeded"

    def _interrupted(self, log: structlog.typing.FilteringBoundLogger, name: str,
                     exc: Interrupted) -> NoReturn:
        self.journal.finish_phase(self.run_id, name, "interrupted", exc.message)
        self.journal.set_interrupted(self.run_id)
        log.warning("phase_interrupted", reason=exc.message)
        raise exc

    def _ended(self, log: structlog.typing.FilteringBoundLogger, name: str, event: str,
               message: str, started: float) -> str:
        status = STATUS_BY_EVENT[event]
        self.journal.finish_phase(self.run_id, name, status, message)
        log.error(f"phase_{status}", error=message,
                  duration_s=round(time.monotonic() - started, 3))
        return event
