"""Drive a window from the state the journal holds to a terminal state.

The loop: look up the phase for the current state, journal its start (with an absolute
deadline), run it, journal how it ended, fire the matching event, journal the transition.
Signals and abort requests are noticed within a poll interval, also while a child runs.
"""

from __future__ import annotations

import signal
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

import structlog

from orchestrator.engine import eta, machine, monitor, proc
from orchestrator.engine.context import Context
from orchestrator.engine.facts import REHEARSAL
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import KEEPS_DEADLINE, TERMINAL, State
from orchestrator.engine.notify import Notices
from orchestrator.engine.phase import Registry
from orchestrator.engine.rows import PhaseStatus
from orchestrator.errors import AbortRequested, Interrupted, PhaseError
from orchestrator.postgres import pg

ABORT_POLL_SECONDS = 0.25
FINISH_SECONDS = 120.0
MONITORED = ("migrate", "rollback")  # production under strain: its sessions are sampled


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
        return Interrupted(f"interrupted by {name}")

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


@dataclass(frozen=True)
class Outcome:
    """How a phase ended: the status journaled for it and the event fired at the machine."""

    status: PhaseStatus
    trigger: str
    error: str | None = None
    summary: str = ""


class Runner:
    def __init__(self, base: Context, registry: Registry, signals: Signals,
                 notices: Notices | None = None) -> None:
        self.base = base
        self.notices = notices
        self.journal = base.journal
        self.run_id = base.run_id
        self.registry = registry
        self.signals = signals
        self.when = self.journal.run(self.run_id).backup_when  # as the window started
        self._state = ""
        self._next_abort_check = 0.0

    def drive(self) -> str:
        window = machine.build(self.journal.run(self.run_id).state, self.when)
        while window.state not in TERMINAL:
            self._state = source = str(window.state)
            try:
                self._check_held()
            except Interrupted:
                self.journal.set_interrupted(self.run_id)
                raise
            outcome = self._abort_now(source) if self._abort_due() else self._run_phase(source)
            if machine.destination(source, outcome.trigger, self.when) == State.ABORTED:
                outcome = self._lower_banner(outcome)
            window.fire(outcome.trigger)
            # The phase's end and the transition commit together: a crash between the two
            # would replay a phase that already finished.
            self.journal.conclude_phase(self.run_id, source, outcome.status, outcome.error,
                                        trigger=outcome.trigger, state=str(window.state))
            structlog.get_logger().info("state_changed", source=source,
                                        trigger=outcome.trigger, state=str(window.state))
            if self.notices:
                self.notices.transition(source, outcome.trigger)
        self.journal.skip_pending(self.run_id)
        self._finish(str(window.state))
        return str(window.state)

    def _finish(self, state: str) -> None:
        for phase in self.registry.finishing():
            name = getattr(phase, "name", type(phase).__name__)
            ctx = self.base.for_phase(name, time.time() + FINISH_SECONDS, self.signals.check)
            try:
                phase.finish(ctx, state)
            except Exception as exc:  # tidying up must never change how the window ended
                ctx.log.warning("finish_failed", error=str(exc))

    def poll(self) -> None:
        self._check_held()
        if self._abort_due():
            raise AbortRequested("aborted by the operator (`window abort`)", phase=self._state)

    def _check_held(self) -> None:
        """A signal, or this process no longer holding the window (its lease lost, the
        target's lock taken by another window), stops it at once."""
        self.signals.check()
        for held in self.journal.holds:
            held.check()

    def _abort_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_abort_check:
            return False
        self._next_abort_check = now + ABORT_POLL_SECONDS
        return machine.can(self._state, "abort", self.when) and \
            self.journal.abort_requested(self.run_id)

    def _lower_banner(self, outcome: Outcome) -> Outcome:
        """Production is untouched, but a banner that went up (even half-way) must come down
        before the window calls itself aborted; if it will not, a person must look."""
        if not self.journal.phase(self.run_id, State.BANNER_ON).attempts:
            return outcome
        # Should this process die while lowering, a resume must lower it again, not carry
        # on from the failed phase: the abort request says so.
        self.journal.request_abort(self.run_id)
        name = State.BANNER_OFF
        ctx = self.base.for_phase(name, time.time() + self.base.settings.timeout(name),
                                  self.signals.check)
        try:
            self.registry[name].run(ctx)
        except Interrupted:
            self.journal.set_interrupted(self.run_id)
            raise
        except PhaseError as exc:
            ctx.log.error("banner_not_lowered", error=exc.message)
            return Outcome(outcome.status, "stuck",
                           f"{outcome.error}; then the banner could not be taken down:"
                           f" {exc.message}")
        ctx.log.info("banner_lowered_before_abort")
        return outcome

    def _abort_now(self, name: str) -> Outcome:
        """An abort found between phases (or on a crashed run): the phase never ran again."""
        was = self.journal.phase(self.run_id, name).status
        status = PhaseStatus.INTERRUPTED \
            if was in (PhaseStatus.RUNNING, PhaseStatus.INTERRUPTED) else PhaseStatus.SKIPPED
        return Outcome(status, "abort", "aborted by the operator (`window abort`)")

    def _deadline(self, name: str) -> float:
        """Phases that only move forward keep the deadline they were given, across restarts:
        time away counts against the window. Re-running a banner command or a recovery step
        gets a fresh one, as giving up on those helps no one."""
        row = self.journal.phase(self.run_id, name)
        if name in KEEPS_DEADLINE and row.deadline and row.attempts:
            return row.deadline
        return time.time() + self.base.settings.timeout(name)

    def _run_phase(self, name: str) -> Outcome:
        deadline = self._deadline(name)
        timeout = self.base.settings.timeout(name)
        self.journal.start_phase(self.run_id, name, deadline, timeout)
        log = structlog.get_logger().bind(phase=name)
        log.info("phase_started", timeout_s=timeout)
        started = time.monotonic()
        with self._watched(name):
            outcome = self._attempt(name, deadline, log)
        took = round(time.monotonic() - started, 3)
        if outcome.error:
            log.error(f"phase_{outcome.status}", error=outcome.error, duration_s=took)
        else:
            log.info("phase_succeeded", summary=outcome.summary, duration_s=took)
        return outcome

    def _attempt(self, name: str, deadline: float,
                 log: structlog.typing.FilteringBoundLogger) -> Outcome:
        if time.time() >= deadline:
            return Outcome(PhaseStatus.TIMED_OUT, "timed_out",
                           "its deadline passed while the window was stopped")
        ctx = self.base.for_phase(name, deadline, self.poll)
        try:
            with self._monitored(ctx):
                result = self.registry[name].run(ctx)
        except Interrupted as exc:
            self._interrupted(log, name, exc)
        except Exception as exc:
            if interrupt := self.signals.pending():  # a cancelled query, after a signal
                self._interrupted(log, name, interrupt)
            if isinstance(exc, PhaseError):
                status = PhaseStatus.ABORTED if exc.event == "abort" \
                    else PhaseStatus(exc.event)  # failed, timed_out
                return Outcome(status, exc.event, exc.message)
            # A bug or an unconverted error must not skip the rollback.
            log.exception("phase_crashed")
            return Outcome(PhaseStatus.FAILED, "failed", f"{type(exc).__name__}: {exc}")
        return Outcome(PhaseStatus.SUCCEEDED, "succeeded", summary=result.summary)

    def _watched(self, name: str) -> AbstractContextManager[None]:
        """People hear when a forward phase runs past what it was expected to take."""
        if self.notices is None:
            return nullcontext()
        settings = self.base.settings
        expected = eta.estimate(settings, self.journal.get(self.run_id, REHEARSAL)).phases
        return self.notices.overrun_watch(name, expected.get(name))

    @staticmethod
    def _monitored(ctx: Context) -> AbstractContextManager[None]:
        if ctx.phase in MONITORED and ctx.settings.monitor.enabled:
            return monitor.sampling(ctx)
        return nullcontext()

    def _interrupted(self, log: structlog.typing.FilteringBoundLogger, name: str,
                     exc: Interrupted) -> NoReturn:
        self.journal.finish_phase(self.run_id, name, PhaseStatus.INTERRUPTED, exc.message)
        self.journal.set_interrupted(self.run_id)
        log.warning("phase_interrupted", reason=exc.message)
        raise exc
