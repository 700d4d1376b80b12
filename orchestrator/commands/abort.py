"""``window abort`` and ``window unlock``: taking a window back from the process that drives it.

An abort asks the live process to roll back and waits for it; where no live process drives
the window (it crashed), this process takes the window over and rolls back itself. An unlock
breaks a live-looking lease (S3 state) whose runner is known to be gone.
"""

from __future__ import annotations

import socket
import time
from typing import TextIO

import structlog

from orchestrator.commands.window import (
    continue_window,
    drive,
    retry,
    retry_trigger,
    same_target,
    stop_leftovers,
    unwrapped,
)
from orchestrator.config import Settings
from orchestrator.engine import gates, holding
from orchestrator.engine.audit import audited
from orchestrator.engine.facts import (
    DATA_LOSS_ACCEPTED,
    ROLLBACK_PAUSED,
    DataLossAccepted,
    WriteGap,
)
from orchestrator.engine.holding import Hold, hold_window
from orchestrator.engine.identity import who
from orchestrator.engine.machine import PHASES, TERMINAL, State
from orchestrator.engine.phase import Registry
from orchestrator.engine.rows import Run
from orchestrator.errors import ExitCode, Interrupted, UsageError
from orchestrator.reporting.status import advice
from orchestrator.store import blobs, lease

ABORT_WAIT_SLACK_SECONDS = 60.0


def abort(settings: Settings, confirm: str | None, stdin: TextIO | None = None,
          registry: Registry | None = None, accept_data_loss: bool = False) -> int:
    with audited(settings, "abort"):
        return _abort(settings, confirm, stdin, registry, accept_data_loss)


def _abort(settings: Settings, confirm: str | None, stdin: TextIO | None,
           registry: Registry | None, accept_data_loss: bool) -> int:
    run, paused, retrying, help_text = _where_abort_stands(settings)
    if run is None or (run.state in (State.COMPLETED, State.ABORTED, State.ROLLED_BACK)
                       and not unwrapped(run)):
        print("no unfinished window: nothing to roll back.")
        return ExitCode.COMPLETED
    if unwrapped(run) and run.state != State.NEEDS_ATTENTION:  # nothing left to roll back
        return ExitCode.NEEDS_ATTENTION if continue_window(settings, registry) \
            == ExitCode.NEEDS_ATTENTION else ExitCode.COMPLETED
    if paused and accept_data_loss:  # a rollback paused on the write gap goes on
        retrying = "accept_data_loss"
    if run.state == State.NEEDS_ATTENTION and not retrying:
        print(help_text)
        return ExitCode.NEEDS_ATTENTION
    gates.confirm(settings, confirm, f"window {run.run_id} is in {run.state}: abort rolls"
                  " production back to its backup (before the banner: simply stops).", stdin)
    hold = Hold(settings, "abort")
    if run.state == State.NEEDS_ATTENTION:  # a rollback paused on the write gap, or stuck
        hold.acquire()
        final = _take_over(settings, run, hold, registry, retrying=retrying, paused=paused)
    elif hold.try_acquire():  # no live process drives the window: roll back here
        final = _take_over(settings, run, hold, registry)
    else:
        holding.request_abort(settings, run.run_id)
        structlog.get_logger().warning("abort_requested", run_id=run.run_id, state=run.state)
        final = _await_or_take_over(settings, run, hold, registry)
    if final == State.COMPLETED:
        print(f"window {run.run_id} completed before the abort took effect.")
    else:
        print(f"window {run.run_id} ended {final}.")
    return ExitCode.NEEDS_ATTENTION if final == State.NEEDS_ATTENTION else ExitCode.COMPLETED


def _where_abort_stands(settings: Settings
                        ) -> tuple[Run | None, WriteGap | None, str | None, str]:
    """The newest run, the write gap a paused rollback stopped on, how a stuck rollback is
    tried again, and the advice for a window that needs attention: read once (with the S3
    backend, one download)."""
    journal = holding.reader(settings)
    if journal is None:
        return None, None, None, ""
    with journal:
        run = journal.latest_run()
        if run is None:
            return None, None, None, ""
        help_text = advice(journal, run, settings) \
            if run.state == State.NEEDS_ATTENTION else ""
        trigger = retry_trigger(journal, run)
        # An abort finishes a rollback; a banner stuck after a successful migration is
        # `window resume`'s (abort would undo a migration that passed its checks).
        rolling_back = trigger in (f"retry_{State.ROLLBACK}", f"retry_{State.ROLLBACK_BANNER_OFF}")
        return (run, journal.get(run.run_id, ROLLBACK_PAUSED), trigger if rolling_back else None,
                help_text)


def _take_over(settings: Settings, run: Run, hold: Hold, registry: Registry | None,
               *, retrying: str | None = None, paused: WriteGap | None = None) -> str:
    """Abort a window no live process drives (it crashed): this process rolls it back. A
    window that needs attention goes back into its rollback by ``retrying`` (accepting the
    write gap it ``paused`` on, for ``accept_data_loss``)."""
    try:
        target, staging = gates.databases(settings)
        same_target(run, target)
        with hold_window(settings, target, "abort", hold) as own:
            run = own.run(run.run_id)  # as it is now that this process holds the window
            if retrying is not None:
                if run.state != State.NEEDS_ATTENTION:
                    print(f"window {run.run_id} is {run.state} now: nothing to try again.")
                    return run.state
                if retrying == "accept_data_loss" and paused is not None:
                    own.put(run.run_id, DATA_LOSS_ACCEPTED,
                            DataLossAccepted(by=who(), write_gap=paused))
                retry(own, run, retrying)
            elif run.state not in TERMINAL:
                own.request_abort(run.run_id)
                structlog.get_logger().warning("abort_requested", run_id=run.run_id,
                                               state=run.state)
            stop_leftovers(own, run.run_id, target, settings)
            drive(settings, own, run.run_id, target=target, staging=staging,
                   registry=registry, event="window_abort_taken_over")
            return own.run(run.run_id).state
    finally:
        hold.release()


def _await_or_take_over(settings: Settings, run: Run, hold: Hold,
                        registry: Registry | None) -> str:
    """Wait for the live process to roll back; if it dies meanwhile, finish the job here."""
    limit = time.time() + sum(settings.timeout(p) for p in PHASES) + ABORT_WAIT_SLACK_SECONDS
    pause = 1.0 if settings.state.backend == "s3" else 0.2
    current = run
    while time.time() < limit:
        try:  # Ctrl-C while waiting, not while rolling back here
            current = _latest_of(settings, run.run_id)
            if current.state in TERMINAL:
                return current.state
            if not (held := hold.try_acquire()):
                time.sleep(pause)
        except Interrupted:
            raise Interrupted("stopped waiting; the abort request stands and the running"
                              " window will still roll back (`window status` follows it)."
                              ) from None
        if held:
            return _take_over(settings, current, hold, registry)
    return current.state


def _latest_of(settings: Settings, run_id: str) -> Run:
    with holding.read(settings) as journal:
        return journal.run(run_id)


def unlock(settings: Settings, confirm: str | None, stdin: TextIO | None = None) -> int:
    """``window unlock``: break a live-looking lease whose runner is known to be gone."""
    with audited(settings, "unlock"):
        if settings.state.backend != "s3":
            raise UsageError("the local state backend has no lease to break: its lock ends"
                             " with the process that holds it (`window status` names it).")
        current = lease.current_lease(settings)
        if current is None or not current.live():
            print("the window's lease is not held: nothing to unlock.")
            return ExitCode.COMPLETED
        gates.confirm(settings, confirm, f"unlock breaks the lease of {current.describe()}:"
                      " do it only if that runner is gone, or two runners will act at once.",
                      stdin)
        broken = lease.break_lease(blobs.store_for(settings),
                                   f"{who()} on {socket.gethostname()} (`window unlock`)",
                                   current.token)
        structlog.get_logger().warning("lease_broken", token=broken.token,
                                       holder=broken.holder, host=broken.host,
                                       pid=broken.pid, command=broken.command)
        print(f"lease {broken.token} of {broken.holder} on {broken.host} broken;"
              " `window resume` or `window abort` takes the window over.")
        return ExitCode.COMPLETED
