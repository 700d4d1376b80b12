"""``window run``, ``rehearse`` and ``resume``: a window driven from its journal to its end.

Each command is a plain typed function the CLI calls, returning an exit code.
cli -> config -> gates -> runner (machine + journal) -> phase.run(ctx).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from orchestrator.config import Settings, require_contacts
from orchestrator.engine import banners, gates, machine, rehearsals
from orchestrator.engine.audit import audited
from orchestrator.engine.context import Context
from orchestrator.engine.facts import (
    DATA_LOSS_ACCEPTED,
    FLEET,
    LINT,
    MIGRATION,
    REHEARSAL_REUSED,
    REHEARSAL_SKIPPED,
    ROLLBACK,
    ROLLBACK_PAUSED,
    By,
    FleetTag,
    Warnings,
)
from orchestrator.engine.holding import hold_window, where
from orchestrator.engine.identity import who
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import EXIT_CODES, RETRYABLE, TERMINAL, State
from orchestrator.engine.notify import Notices
from orchestrator.engine.phase import Registry
from orchestrator.engine.proc import start_ticks
from orchestrator.engine.rows import PhaseStatus, Run
from orchestrator.engine.runner import Runner, Signals, stop_orphans
from orchestrator.errors import (
    ConfigError,
    ExitCode,
    GateRefused,
    Interrupted,
    LeaseLost,
    PhaseError,
    PhaseFailed,
    UsageError,
)
from orchestrator.postgres import migrations, pg
from orchestrator.postgres.migrations import ToolState
from orchestrator.redact import redact
from orchestrator.reporting.live import live_view
from orchestrator.reporting.record import write_after_window
from orchestrator.reporting.status import advice, status, table, ways_on
from phases import default_registry

ABORT_WAIT_SLACK_SECONDS = 60.0


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(2)


def summary(settings: Settings, target: pg.Db, staging: pg.Db,
            tool: ToolState | None = None) -> str:
    phases = ", ".join(f"{p} {settings.timeout(p):g}s"
                       for p in machine.phases(settings.backup.when))
    pending = f"\n  pending: {', '.join(tool.pending)}" if tool and tool.pending else ""
    where = f"staging {staging}" if settings.staging.needs_url else "a copy of production"
    return (f"window {settings.window.name!r} will migrate production {target}"
            f" after rehearsing on {where}.\n"
            f"  backup to {settings.path(settings.backup.dir)}\n  phases: {phases}{pending}")


def run(settings: Settings, confirm: str | None, stdin: TextIO | None = None,
        registry: Registry | None = None, *, force: bool = False,
        skip_staging: bool = False, fleet_run: str | None = None) -> int:
    with audited(settings, "run"):
        return _run(settings, confirm, stdin, registry, force=force, skip_staging=skip_staging,
                    fleet_run=fleet_run)


def _run(settings: Settings, confirm: str | None, stdin: TextIO | None,
         registry: Registry | None, *, force: bool, skip_staging: bool,
         fleet_run: str | None) -> int:
    if skip_staging and not settings.staging.skip:
        raise UsageError("--skip-staging also needs [staging] skip = true in the config:"
                         " skipping the rehearsal takes both, on purpose.")
    require_contacts(settings.contacts)
    target, staging = gates.databases(settings)
    banners.require_page_folder(settings)  # a page no web server would serve
    gates.distinct(settings, target, staging, refusal=ConfigError)
    with hold_window(settings, target, "run") as journal:
        if fleet_run and (tagged := journal.tagged_run(fleet_run)):
            return _claimed(settings, journal, tagged, target=target, staging=staging,
                            registry=registry)
        unfinished = unfinished_run(journal)
        if unfinished and unwrapped(unfinished):
            raise GateRefused(f"window {unfinished.run_id} ended {unfinished.state} but its"
                              " process died before wrapping up: `window resume` finishes it.")
        if unfinished:
            raise GateRefused(f"window {unfinished.run_id} is unfinished ({unfinished.state}):"
                              " `window resume` continues it, `window abort` rolls it back.")
        tool = None
        if settings.migrate.tool != "none":
            # Read under the window's locks (another window's migration in flight is not a
            # failed one) and before the phrase, so that the prompt names what is pending.
            tool = gates.migration_tool(settings, target)
            if tool.pending == () and not force:
                structlog.get_logger().info("nothing_pending", table=tool.table,
                                            applied=len(tool.applied))
                print(f"nothing to do: production's {tool.table} has every migration in"
                      f" {settings.migrate.files} applied ({len(tool.applied)});"
                      " `window run --force` runs the window anyway.")
                return ExitCode.COMPLETED
        warnings = _clinic(settings, tool)  # plain SQL files too: all pending, no table
        gates.confirm(settings, confirm, summary(settings, target, staging, tool), stdin)
        gates.git_repo(settings)
        reused = None if skip_staging else \
            rehearsals.reusable(settings, journal, str(target), str(staging))
        run_id = new_run_id()
        journal.create_run(run_id, [str(p) for p in machine.phases(settings.backup.when)], {
            "user": who(), "host": socket.gethostname(),
            "git_commit": gates.git("rev-parse", "HEAD"),
            "target": str(target), "staging": settings.staging.shown(str(staging)),
            "backup_when": settings.backup.when})
        if warnings:
            journal.put(run_id, LINT, Warnings(warnings=warnings))
        if fleet_run:
            journal.put(run_id, FLEET, FleetTag(id=fleet_run))
        _plan_rehearsal(journal, run_id, skip=skip_staging, reused=reused)
        return drive(settings, journal, run_id, target=target, staging=staging,
                      registry=registry, event="window_started", distinct_checked=True)


def _clinic(settings: Settings, tool: ToolState | None) -> list[str]:
    """The migration clinic, before the window acts on anything: errors refuse; the
    warnings, as lines for the journal."""
    if settings.migrate.files is None or not settings.lint.enabled:
        return []
    from orchestrator.clinic import examine  # noqa: PLC0415 - pglast only with files to read

    return [str(finding) for finding in examine.gate(settings, tool)]


def _claimed(settings: Settings, journal: Journal, run: Run, *, target: pg.Db,
             staging: pg.Db, registry: Registry | None) -> int:
    """A fleet's target already has its window for this fleet run: driven to its end if
    unfinished (its runner died), else only its outcome is told. It never runs twice."""
    if run.state in TERMINAL:
        print(f"window {run.run_id} already ended {run.state} in this fleet run.")
        return run.exit_code if run.exit_code is not None else EXIT_CODES[State(run.state)]
    same_target(run, target)
    stop_leftovers(journal, run.run_id, target, settings)
    return drive(settings, journal, run.run_id, target=target, staging=staging,
                  registry=registry, event="window_resumed")


def _plan_rehearsal(journal: Journal, run_id: str, *, skip: bool,
                    reused: dict[str, Any] | None) -> None:
    """Tell the staging phase to skip the rehearsal (a risk, recorded as one) or to reuse a
    recent successful one of exactly these migration files; else it rehearses."""
    logger = structlog.get_logger()
    if skip:
        journal.put(run_id, REHEARSAL_SKIPPED, By(by=who()))
        logger.warning("staging_skipped", risk="the migration was not rehearsed")
        return
    if found := reused:
        journal.put(run_id, REHEARSAL_REUSED, found)
        age = time.time() - found["at"]
        print(f"reusing rehearsal {found['id']} from {age / 60:.0f} min ago (the same"
              " migration files); `window rehearse` makes a fresh one.")
        logger.info("rehearsal_reused", rehearsal=found["id"], age_s=round(age))


def rehearse(settings: Settings, registry: Registry | None = None) -> int:
    """``window rehearse``: preflight and the staging rehearsal alone, recorded for a later
    ``window run`` of the same files. Production is only read."""
    with audited(settings, "rehearse"):
        target, staging = gates.databases(settings)
        gates.git_repo(settings)
        gates.distinct(settings, target, staging, refusal=ConfigError)
        fingerprint = migrations.fingerprint(settings)
        with hold_window(settings, target, "rehearse") as journal:
            if unfinished := unfinished_run(journal):  # production may be half-migrated
                raise GateRefused(f"window {unfinished.run_id} is unfinished"
                                  f" ({unfinished.state}): `window resume` or `window abort`"
                                  " it before rehearsing.")
            rehearsal_id = "rehearsal_" + new_run_id()
            with structlog.contextvars.bound_contextvars(run_id=rehearsal_id):
                error = _rehearse(Context(settings=settings, journal=journal,
                                          run_id=rehearsal_id, target=target,
                                          staging=staging, distinct_checked=True),
                                  registry or default_registry())
            if error is None:
                print(f"rehearsal {rehearsal_id} succeeded; `window run` reuses it for"
                      f" {settings.staging.max_age / 3600:g}h unless the files change.")
                return ExitCode.COMPLETED
            journal.record_rehearsal(rehearsal_id, fingerprint=fingerprint, target=str(target),
                                     staging=str(staging), facts={}, error=error)
            print(redact(f"rehearsal {rehearsal_id} failed: {error}"))
            return ExitCode.REFUSED


def _rehearse(ctx: Context, phases: Registry) -> str | None:
    """Run preflight and the rehearsal as a window would; what went wrong, or None."""
    signals = Signals()
    signals.install()
    for name in (State.PREFLIGHT, State.STAGING_DRY_RUN):
        deadline = time.time() + ctx.settings.timeout(name)
        try:
            phases[name].run(ctx.for_phase(name, deadline, signals.check))
        except Interrupted:
            raise
        except PhaseError as exc:
            structlog.get_logger().error("rehearsal_failed", phase=name, error=exc.message)
            return f"{name}: {exc.message}"
        except Exception as exc:  # a bug must still end in one sentence and a record
            structlog.get_logger().exception("rehearsal_crashed", phase=name)
            return f"{name}: {type(exc).__name__}: {exc}"
    return None


def resume(settings: Settings, registry: Registry | None = None) -> int:
    with audited(settings, "resume"):
        return continue_window(settings, registry)


def continue_window(settings: Settings, registry: Registry | None) -> int:
    target, staging = gates.databases(settings)
    with hold_window(settings, target, "resume") as journal:
        run = unfinished_run(journal)
        if run is None and (latest := journal.latest_run()) is not None and (
                trigger := retry_trigger(journal, latest)):  # it needs attention: try again
            same_target(latest, target)
            retry(journal, latest, trigger)
            run = latest
        if run is None:
            raise UsageError(f"no unfinished window in {where(settings)}: nothing to resume.")
        same_target(run, target)
        stop_leftovers(journal, run.run_id, target, settings)
        return drive(settings, journal, run.run_id, target=target, staging=staging,
                      registry=registry, event="window_resumed")








def stop_leftovers(journal: Journal, run_id: str, target: pg.Db, settings: Settings) -> None:
    """What a dead window process left running: its children, then their server sessions
    (a killed client's query runs on, holding its locks)."""
    if not stop_orphans(journal, run_id):
        return
    try:
        with pg.connect(target.on(settings.target.maintenance_db),
                        time.time() + settings.target.connect_timeout) as conn:
            ended = pg.terminate_sessions(conn, application_prefix=f"window/{run_id}/")
    except PhaseFailed as exc:
        structlog.get_logger().warning("sessions_not_ended", error=exc.message)
        return
    structlog.get_logger().info("orphan_sessions_ended", count=ended)


def unfinished_run(journal: Journal) -> Run | None:
    """The newest run, if it is not over: not in a final state, or in one but not wrapped up
    (its process died before dropping the scratch databases and recording its exit code)."""
    run = journal.latest_run()
    return run if run is not None and (run.state not in TERMINAL or unwrapped(run)) else None


def retry_trigger(journal: Journal, run: Run) -> str | None:
    """How a window that needs attention is tried again from where it stopped: the trigger
    back into the phase that failed (a rollback, a banner's removal); None when nothing can
    be tried again by the window itself (a rollback paused on the write gap until someone
    accepts the loss, an RDS snapshot restored to a new instance, a failure before the
    migration)."""
    if run.state != State.NEEDS_ATTENTION or unwrapped(run):
        return None
    failed = [p.name for p in journal.phases(run.run_id)
              if p.status in (PhaseStatus.FAILED, PhaseStatus.TIMED_OUT)]
    last = failed[-1] if failed else ""
    if last not in RETRYABLE:
        return None
    if last == State.ROLLBACK:
        paused = journal.get(run.run_id, ROLLBACK_PAUSED)
        if (paused and not journal.get(run.run_id, DATA_LOSS_ACCEPTED)) or \
                (journal.get(run.run_id, ROLLBACK) or {}).get("instructions"):
            return None
    return f"retry_{last}"


def retry(journal: Journal, run: Run, trigger: str) -> None:
    """Move a window that needs attention back into the phase ``trigger`` names."""
    structlog.get_logger().warning("window_retried", run_id=run.run_id, trigger=trigger)
    journal.transition(run.run_id, run.state, trigger,
                       machine.build(run.state, run.backup_when).fire(trigger))


def unwrapped(run: Run) -> bool:
    return run.state in TERMINAL and run.finished_at is None


def same_target(run: Run, target: pg.Db) -> None:
    if run.target and run.target != str(target):
        raise GateRefused(f"window {run.run_id} was started against {run.target}, but the"
                          f" target variable now points at {target}; nothing was done.")


def drive(settings: Settings, journal: Journal, run_id: str, *, target: pg.Db,
           staging: pg.Db, registry: Registry | None, event: str,
           distinct_checked: bool = False) -> int:
    signals = Signals()
    signals.install()
    journal.claim(run_id, os.getpid(), start_ticks(os.getpid()))
    run = journal.run(run_id)
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        logger = structlog.get_logger()
        logger.info(event, window=settings.window.name, target=str(target), state=run.state)
        ctx = Context(settings=settings, journal=journal, run_id=run_id, target=target,
                      staging=staging, distinct_checked=distinct_checked)
        notices = Notices(settings, run_id)
        if event in ("window_started", "window_resumed"):
            notices.started(resumed=event == "window_resumed")
        try:
            with live_view(journal, run_id, settings):
                final = Runner(ctx, registry or default_registry(), signals, notices).drive()
        except LeaseLost:
            raise  # another runner drives the window now: nothing more from this one
        except Interrupted as exc:
            logger.warning("window_interrupted", reason=exc.message)
            # Said as this process exits: nothing drives the window once it is read.
            print(table(status(journal, journal.run(run_id), settings, alive=False)))
            write_after_window(journal, run_id, settings)
            raise Interrupted(f"{exc.message}; {ways_on(journal.phases(run_id))}") from None
        code = EXIT_CODES[State(final)]
        journal.finish(run_id, code)
        write_after_window(journal, run_id, settings)  # before the last word is said
        logger.info("window_finished", state=final, exit_code=code,
                    duration_s=round(time.monotonic() - started, 3))
        help_text = advice(journal, journal.run(run_id), settings) \
            if final == State.NEEDS_ATTENTION else ""
        ran = journal.get(run_id, MIGRATION)
        failed = [p.error for p in journal.phases(run_id)
                  if p.status in (PhaseStatus.FAILED, PhaseStatus.TIMED_OUT) and p.error]
        notices.finished(final, help_text, ran["applied"] if ran else None,
                         failed[-1] if failed else "")
    print(table(status(journal, journal.run(run_id), settings)))
    if help_text:
        print(help_text)
    return code
