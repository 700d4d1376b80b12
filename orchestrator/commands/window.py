"""The commands, as plain typed functions the CLI calls: each returns an exit code.

cli -> config -> gates -> runner (machine + journal) -> phase.run(ctx).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from orchestrator import log
from orchestrator.commands import housekeeping
from orchestrator.config import Settings, require_contacts
from orchestrator.engine import gates, holding, machine, rehearsals
from orchestrator.engine.context import Context
from orchestrator.engine.identity import who
from orchestrator.engine.journal import Journal, Run
from orchestrator.engine.machine import EXIT_CODES, PHASES, TERMINAL, State
from orchestrator.engine.notify import Notices
from orchestrator.engine.phase import Registry
from orchestrator.engine.proc import start_ticks
from orchestrator.engine.runner import Runner, Signals, stop_orphans
from orchestrator.errors import (
    ConfigError,
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
from orchestrator.reporting.record import find_run, history, write, write_after_window
from orchestrator.reporting.status import advice, status, table, where
from orchestrator.store import blobs, lease
from orchestrator.store.lock import TargetLock
from phases import default_registry

ABORT_WAIT_SLACK_SECONDS = 60.0


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(2)


def summary(settings: Settings, target: pg.Db, staging: pg.Db,
            tool: ToolState | None = None) -> str:
    phases = ", ".join(f"{p} {settings.timeout(p):g}s"
                       for p in machine.phases(settings.backup.when))
    pending = f"\n  pending: {', '.join(tool.pending)}" if tool and tool.pending else ""
    return (f"window {settings.window.name!r} will migrate production {target}"
            f" after rehearsing on staging {staging}.\n"
            f"  backup to {settings.path(settings.backup.dir)}\n  phases: {phases}{pending}")


def run(settings: Settings, confirm: str | None, stdin: TextIO | None = None,
        registry: Registry | None = None, *, force: bool = False,
        skip_staging: bool = False, fleet_run: str | None = None) -> int:
    with _audited(settings, "run"):
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

    def ask(tool: ToolState | None = None) -> None:
        gates.confirm(settings, confirm, summary(settings, target, staging, tool), stdin)
        gates.git_repo(settings)

    if settings.migrate.tool == "none":
        ask()  # nothing to read first: the phrase before any connection
    warnings: list[str] = []
    with _holding(settings, target, "run") as journal:
        if fleet_run and (tagged := journal.tagged_run(fleet_run)):
            return _claimed(settings, journal, tagged, target=target, staging=staging,
                            registry=registry)
        unfinished = _unfinished(journal)
        if unfinished and _unwrapped(unfinished):
            raise GateRefused(f"window {unfinished.run_id} ended {unfinished.state} but its"
                              " process died before wrapping up: `window resume` finishes it.")
        if unfinished:
            raise GateRefused(f"window {unfinished.run_id} is unfinished ({unfinished.state}):"
                              " `window resume` continues it, `window abort` rolls it back.")
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
                return 0
            # The migration clinic, before the window acts on anything: errors refuse.
            from orchestrator.clinic import examine  # noqa: PLC0415 - pglast only with a tool

            warnings = [str(finding) for finding in examine.gate(settings, tool)]
            ask(tool)
        reused = None if skip_staging else \
            rehearsals.reusable(settings, journal, str(target), str(staging))
        run_id = new_run_id()
        journal.create_run(run_id, [str(p) for p in machine.phases(settings.backup.when)], {
            "user": who(), "host": socket.gethostname(),
            "git_commit": gates.git("rev-parse", "HEAD"),
            "target": str(target), "staging": str(staging),
            "backup_when": settings.backup.when})
        if warnings:
            journal.put(run_id, "lint", {"warnings": warnings})
        if fleet_run:
            journal.put(run_id, "fleet", {"id": fleet_run})
        _plan_rehearsal(journal, run_id, skip=skip_staging, reused=reused)
        return _drive(settings, journal, run_id, target=target, staging=staging,
                      registry=registry, event="window_started")


def _claimed(settings: Settings, journal: Journal, run: Run, *, target: pg.Db,
             staging: pg.Db, registry: Registry | None) -> int:
    """A fleet's target already has its window for this fleet run: driven to its end if
    unfinished (its runner died), else only its outcome is told. It never runs twice."""
    if run.state in TERMINAL:
        print(f"window {run.run_id} already ended {run.state} in this fleet run.")
        return run.exit_code if run.exit_code is not None else EXIT_CODES[State(run.state)]
    _same_target(run, target)
    _stop_leftovers(journal, run.run_id, target, settings)
    return _drive(settings, journal, run.run_id, target=target, staging=staging,
                  registry=registry, event="window_resumed")


def _plan_rehearsal(journal: Journal, run_id: str, *, skip: bool,
                    reused: dict[str, Any] | None) -> None:
    """Tell the staging phase to skip the rehearsal (a risk, recorded as one) or to reuse a
    recent successful one of exactly these migration files; else it rehearses."""
    logger = structlog.get_logger()
    if skip:
        journal.put(run_id, rehearsals.SKIPPED, {"by": who()})
        logger.warning("staging_skipped", risk="the migration was not rehearsed")
        return
    if found := reused:
        journal.put(run_id, rehearsals.REUSED, found)
        age = time.time() - found["at"]
        print(f"reusing rehearsal {found['id']} from {age / 60:.0f} min ago (the same"
              " migration files); `window rehearse` makes a fresh one.")
        logger.info("rehearsal_reused", rehearsal=found["id"], age_s=round(age))


def rehearse(settings: Settings, registry: Registry | None = None) -> int:
    """``window rehearse``: preflight and the staging rehearsal alone, recorded for a later
    ``window run`` of the same files. Production is only read."""
    with _audited(settings, "rehearse"):
        target, staging = gates.databases(settings)
        gates.git_repo(settings)
        fingerprint = migrations.fingerprint(settings)
        with _holding(settings, target, "rehearse") as journal:
            if unfinished := _unfinished(journal):  # production may be half-migrated
                raise GateRefused(f"window {unfinished.run_id} is unfinished"
                                  f" ({unfinished.state}): `window resume` or `window abort`"
                                  " it before rehearsing.")
            rehearsal_id = "rehearsal_" + new_run_id()
            with structlog.contextvars.bound_contextvars(run_id=rehearsal_id):
                error = _rehearse(Context(settings=settings, journal=journal,
                                          run_id=rehearsal_id, target=target,
                                          staging=staging), registry or default_registry())
            if error is None:
                print(f"rehearsal {rehearsal_id} succeeded; `window run` reuses it for"
                      f" {settings.staging.max_age / 3600:g}h unless the files change.")
                return 0
            journal.record_rehearsal(rehearsal_id, fingerprint=fingerprint, target=str(target),
                                     staging=str(staging), facts={}, error=error)
            print(redact(f"rehearsal {rehearsal_id} failed: {error}"))
            return 3


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
    with _audited(settings, "resume"):
        return _resume(settings, registry)


def _resume(settings: Settings, registry: Registry | None) -> int:
    target, staging = gates.databases(settings)
    with _holding(settings, target, "resume") as journal:
        run = _unfinished(journal)
        if run is None:
            raise UsageError(f"no unfinished window in {where(settings)}: nothing to resume.")
        _same_target(run, target)
        _stop_leftovers(journal, run.run_id, target, settings)
        return _drive(settings, journal, run.run_id, target=target, staging=staging,
                      registry=registry, event="window_resumed")


def abort(settings: Settings, confirm: str | None, stdin: TextIO | None = None,
          registry: Registry | None = None, accept_data_loss: bool = False) -> int:
    with _audited(settings, "abort"):
        return _abort(settings, confirm, stdin, registry, accept_data_loss)


def _abort(settings: Settings, confirm: str | None, stdin: TextIO | None,
           registry: Registry | None, accept_data_loss: bool) -> int:
    run, paused, help_text = _where_abort_stands(settings)
    if run is None or (run.state in (State.COMPLETED, State.ABORTED, State.ROLLED_BACK)
                       and not _unwrapped(run)):
        print("no unfinished window: nothing to roll back.")
        return 0
    if _unwrapped(run) and run.state != State.NEEDS_ATTENTION:  # nothing left to roll back
        return 0 if _resume(settings, registry) != 4 else 4
    if run.state == State.NEEDS_ATTENTION and not (paused and accept_data_loss):
        print(help_text)
        return 4
    gates.confirm(settings, confirm, f"window {run.run_id} is in {run.state}: abort rolls"
                  " production back to its backup (before the banner: simply stops).", stdin)
    hold = holding.Hold(settings, "abort")
    if run.state == State.NEEDS_ATTENTION:  # a rollback paused on the write gap
        hold.acquire()
        final = _take_over(settings, run, hold, registry, accept_write_gap=paused)
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
    return 4 if final == State.NEEDS_ATTENTION else 0


def _where_abort_stands(settings: Settings
                        ) -> tuple[Run | None, dict[str, Any] | None, str]:
    """The newest run, the write gap a paused rollback stopped on, and the advice for a
    window that needs attention: read once (with the S3 backend, one download)."""
    journal = holding.reader(settings)
    if journal is None:
        return None, None, ""
    with journal:
        run = journal.latest_run()
        if run is None:
            return None, None, ""
        help_text = advice(journal, run, settings) \
            if run.state == State.NEEDS_ATTENTION else ""
        return run, journal.get(run.run_id, "rollback_paused"), help_text


def _take_over(settings: Settings, run: Run, hold: holding.Hold, registry: Registry | None,
               accept_write_gap: dict[str, Any] | None = None) -> str:
    """Abort a window no live process drives (it crashed): this process rolls it back."""
    try:
        target, staging = gates.databases(settings)
        _same_target(run, target)
        with _holding(settings, target, "abort", hold) as own:
            run = own.run(run.run_id)  # as it is now that this process holds the window
            if accept_write_gap is not None:
                if run.state != State.NEEDS_ATTENTION:
                    print(f"window {run.run_id} is {run.state} now: nothing to accept.")
                    return run.state
                own.put(run.run_id, "data_loss_accepted",
                        {"by": who(), "write_gap": accept_write_gap})
                own.transition(run.run_id, run.state, "accept_data_loss",
                               machine.build(run.state, run.backup_when)
                               .fire("accept_data_loss"))
            elif run.state not in TERMINAL:
                own.request_abort(run.run_id)
                structlog.get_logger().warning("abort_requested", run_id=run.run_id,
                                               state=run.state)
            _stop_leftovers(own, run.run_id, target, settings)
            _drive(settings, own, run.run_id, target=target, staging=staging,
                   registry=registry, event="window_abort_taken_over")
            return own.run(run.run_id).state
    finally:
        hold.release()


def _await_or_take_over(settings: Settings, run: Run, hold: holding.Hold,
                        registry: Registry | None) -> str:
    """Wait for the live process to roll back; if it dies meanwhile, finish the job here."""
    limit = time.time() + sum(settings.timeout(p) for p in PHASES) + ABORT_WAIT_SLACK_SECONDS
    pause = 1.0 if settings.state.backend == "s3" else 0.2
    current = run
    try:
        while time.time() < limit:
            current = _latest_of(settings, run.run_id)
            if current.state in TERMINAL:
                return current.state
            if hold.try_acquire():
                return _take_over(settings, current, hold, registry)
            time.sleep(pause)
    except KeyboardInterrupt:
        raise Interrupted("stopped waiting; the abort request stands and the running window"
                          " will still roll back (`window status` follows it).") from None
    return current.state


def _latest_of(settings: Settings, run_id: str) -> Run:
    with _read(settings) as journal:
        return journal.run(run_id)


def _read(settings: Settings) -> Journal:
    """The window's journal to read; no window ever ran is a usage error."""
    journal = holding.reader(settings)
    if journal is None:
        raise UsageError(f"no window has run from {where(settings)} yet.")
    return journal


def unlock(settings: Settings, confirm: str | None, stdin: TextIO | None = None) -> int:
    """``window unlock``: break a live-looking lease whose runner is known to be gone."""
    with _audited(settings, "unlock"):
        if settings.state.backend != "s3":
            raise UsageError("the local state backend has no lease to break: its lock ends"
                             " with the process that holds it (`window status` names it).")
        current = lease.current_lease(settings)
        if current is None or not current.live():
            print("the window's lease is not held: nothing to unlock.")
            return 0
        gates.confirm(settings, confirm, f"unlock breaks the lease of {current.describe()}:"
                      " do it only if that runner is gone, or two runners will act at once.",
                      stdin)
        broken = lease.break_lease(settings, f"{who()} on {socket.gethostname()} (`window unlock`)")
        structlog.get_logger().warning("lease_broken", token=broken.token,
                                       holder=broken.holder, host=broken.host,
                                       pid=broken.pid, command=broken.command)
        print(f"lease {broken.token} of {broken.holder} on {broken.host} broken;"
              " `window resume` or `window abort` takes the window over.")
        return 0


def show_backups(settings: Settings) -> str:
    target = None
    if os.environ.get(settings.target.url_env):
        target = gates.database(settings, settings.target.url_env, "target", UsageError)
    return housekeeping.listing(settings, holding.reader(settings), target)


def prune(settings: Settings, confirm: str | None, *, keep: int | None,
          failed_databases: bool, stdin: TextIO | None = None) -> int:
    if keep is None and not failed_databases:
        raise UsageError("say what to prune: --keep N (archives) and/or --failed-databases.")
    with _audited(settings, "prune"):
        target = gates.database(settings, settings.target.url_env, "target") \
            if failed_databases else None
        gates.confirm(settings, confirm, "prune deletes backup archives"
                      f"{' and retained _failed_ databases' if failed_databases else ''}.",
                      stdin)
        journal = holding.reader(settings)
        logger = structlog.get_logger()
        if keep is not None:
            for path in housekeeping.prune_archives(settings, journal, keep):
                logger.info("archive_pruned", path=str(path))
        if target is not None:
            for name in housekeeping.prune_failed_databases(settings, journal, target):
                logger.info("failed_database_dropped", database=name)
    return 0


def write_reports(settings: Settings, run_id: str | None, formats: tuple[str, ...]
                  ) -> list[Path]:
    """``window report``: a run's report.md / report.html written again; the paths."""
    journal = _read(settings)
    return write(journal, find_run(journal, run_id, settings.state_dir), settings, formats)


def show_history(settings: Settings, limit: int) -> str:
    journal = _read(settings)
    return history(journal, settings.state_dir, limit)


@contextmanager
def _audited(settings: Settings, command: str) -> Iterator[None]:
    """Every run, resume and abort leaves a trail, refusals included: who, where, what."""
    try:
        log.audit.open(settings.state_dir / "audit.jsonl")
    except OSError as exc:
        raise ConfigError(f"the state folder {settings.state_dir} cannot be written"
                          f" ({exc.strerror or exc}); set [window] state_dir.") from exc
    try:
        with structlog.contextvars.bound_contextvars(
            cli_command=command, user=who(), host=socket.gethostname(),
            git_commit=gates.git("rev-parse", "HEAD"),
        ):
            try:
                yield
            except (GateRefused, UsageError) as exc:
                structlog.get_logger().warning("command_refused", reason=exc.message,
                                               exit_code=exc.exit_code)
                raise
    finally:
        log.audit.close()
        blobs.shelve_audit(settings)


@contextmanager
def _holding(settings: Settings, target: pg.Db, command: str, held: holding.Hold | None = None
             ) -> Iterator[Journal]:
    """Gate 4: this process alone drives this state (its folder, and with S3 its lease) and
    this target."""
    hold = held or holding.Hold(settings, command)
    target_lock = TargetLock(target, settings.target.maintenance_db)
    if held is None:
        hold.acquire()
    try:
        target_lock.acquire(time.time() + settings.target.connect_timeout,
                            take_over=hold.took_over)
        journal = hold.open_journal()
        journal.holds = (hold, target_lock)
        try:
            yield journal
        finally:
            journal.close()
            target_lock.release()
    finally:
        hold.release()


def _stop_leftovers(journal: Journal, run_id: str, target: pg.Db, settings: Settings) -> None:
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


def _unfinished(journal: Journal) -> Run | None:
    """The newest run, if it is not over: not in a final state, or in one but not wrapped up
    (its process died before dropping the scratch databases and recording its exit code)."""
    run = journal.latest_run()
    return run if run is not None and (run.state not in TERMINAL or _unwrapped(run)) else None


def _unwrapped(run: Run) -> bool:
    return run.state in TERMINAL and run.finished_at is None


def _same_target(run: Run, target: pg.Db) -> None:
    if run.target and run.target != str(target):
        raise GateRefused(f"window {run.run_id} was started against {run.target}, but the"
                          f" target variable now points at {target}; nothing was done.")


def _drive(settings: Settings, journal: Journal, run_id: str, *, target: pg.Db,
           staging: pg.Db, registry: Registry | None, event: str) -> int:
    signals = Signals()
    signals.install()
    journal.claim(run_id, os.getpid(), start_ticks(os.getpid()))
    run = journal.run(run_id)
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        logger = structlog.get_logger()
        logger.info(event, window=settings.window.name, target=str(target), state=run.state)
        ctx = Context(settings=settings, journal=journal, run_id=run_id, target=target,
                      staging=staging)
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
            print(table(status(journal, journal.run(run_id), settings)))
            write_after_window(journal, run_id, settings)
            raise
        code = EXIT_CODES[State(final)]
        journal.finish(run_id, code)
        write_after_window(journal, run_id, settings)  # before the last word is said
        logger.info("window_finished", state=final, exit_code=code,
                    duration_s=round(time.monotonic() - started, 3))
        help_text = advice(journal, journal.run(run_id), settings) \
            if final == State.NEEDS_ATTENTION else ""
        notices.finished(final, help_text)
    print(table(status(journal, journal.run(run_id), settings)))
    if help_text:
        print(help_text)
    return code
