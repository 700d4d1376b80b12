"""The built-in runner of a fleet: child windows and the loop that places targets through
them, and the ``window fleet`` commands that act (open, run, resume, abort) with their audit.

One runner drives a fleet run at a time: it holds the fleet's lock (``fleet_hold``) and alone
writes the record. With ``--target`` the caller is the engine (a CI job per target): it runs
those targets' windows in the fleet run, neither taking the fleet's lock nor writing the
record; each window is still exactly once through its own journal, lock and lease.

The record, where each target stands and the next step are in ``fleet.record``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TextIO

import structlog

from orchestrator import config
from orchestrator.config import Settings
from orchestrator.engine import gates
from orchestrator.engine.audit import audited
from orchestrator.engine.holding import Hold
from orchestrator.engine.identity import who
from orchestrator.errors import Busy, ConfigError, ExitCode, GateRefused, UsageError
from orchestrator.fleet.record import (
    PENDING,
    SEVERITY,
    Record,
    Step,
    View,
    ending,
    existing,
    exit_code,
    fleet_state,
    new_fleet_id,
    next_step,
    read_record,
    read_view,
    record_outcome,
    report,
    request_abort,
    table,
    unfinished,
    views_of,
    with_abort,
    write_record,
)
from orchestrator.fleet.spec import Fleet, Target, check_staging, targets
from orchestrator.redact import redact
from orchestrator.store import blobs, lease

POLL_SECONDS = 0.5
WAIT_SECONDS = 2.0  # a runner of some targets (--target) waiting for their wave looks this often
BUSY_PAUSE_SECONDS = 2.0  # a target another process holds is looked at again after this
MAX_RESTARTS = 3  # a target whose window keeps stopping unfinished then stops the fleet
ABORT_SETTLE_SECONDS = 5.0  # a runner may have started a target just before the abort mark
STATE_OUTAGE_SECONDS = 120.0  # a runner rides out the shared state unreachable this long


# the runner ---------------------------------------------------------------------------------


@dataclass
class ChildWindow:
    process: subprocess.Popen[bytes]
    last_line: str = ""
    relay: threading.Thread | None = None


class ChildWindows:
    """ChildWindow windows, each in its own session writing to its own file, and a thread per child
    relaying the file's lines prefixed with its target, so the operator follows every target
    in one terminal. A runner that dies (a dropped SSH session) takes no window down with it:
    its children write on to their files and finish; ``window fleet resume`` waits for them."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.live: dict[str, ChildWindow] = {}
        self._print = threading.Lock()

    def start(self, name: str, argv: list[str], env: dict[str, str], output: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("ab") as sink:  # the child keeps its own descriptor
            offset = sink.tell()
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        child = ChildWindow(process)
        child.relay = threading.Thread(target=self._relay, args=(name, child, output, offset),
                                       daemon=True, name=f"fleet-{name}")
        child.relay.start()
        self.live[name] = child

    def _relay(self, name: str, child: ChildWindow, output: Path, offset: int) -> None:
        with output.open("rb") as source:
            source.seek(offset)
            pending = b""
            while True:
                exited = child.process.poll() is not None
                chunk = source.read(65536)
                if not chunk and exited:
                    break
                if not chunk:
                    time.sleep(0.1)
                    continue
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._line(name, child, line)
            if pending:
                self._line(name, child, pending)

    def _line(self, name: str, child: ChildWindow, raw: bytes) -> None:
        text = redact(raw.decode(errors="replace").rstrip("\r"))
        child.last_line = text.strip() or child.last_line
        self.say(f"[{name}] {text}")

    def say(self, text: str) -> None:
        with self._print:
            print(text, file=self.out, flush=True)

    def ended(self, *, wait: bool = False) -> Iterator[tuple[str, int, str]]:
        """Each child that exited (every child, with ``wait``): name, exit code, last line."""
        for name, child in list(self.live.items()):
            code = child.process.wait() if wait else child.process.poll()
            if code is None:
                continue
            if child.relay is not None:
                child.relay.join(timeout=5)
            del self.live[name]
            yield name, code, child.last_line

    def signal(self, signum: int) -> None:
        for child in list(self.live.values()):
            with suppress(ProcessLookupError):
                child.process.send_signal(signum)


def output_file(settings: Settings, record: Record, name: str) -> Path:
    """Where this runner's children for ``name`` write: in the target's state folder."""
    return settings.for_target(name).state_dir / "fleet" / f"{record.id}.{os.getpid()}.log"


def child_env(settings: Settings, record: Record, target: Target) -> dict[str, str]:
    """The runner's environment with the shared config's variables naming this target, and
    ``WINDOW_TARGET`` / ``WINDOW_FLEET_RUN`` for the commands the window runs (a banner per
    target)."""
    env = {**os.environ, settings.target.url_env: target.url, "WINDOW_TARGET": target.name,
           "WINDOW_FLEET_RUN": record.id}
    if target.staging_url:
        env[settings.staging.url_env] = target.staging_url
    return env


def window_argv(fleet: Fleet, command: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", command, "-c", str(fleet.config_path),
            "--target", name, *extra]


class FleetRunner:
    """The runner of a fleet run: places targets through children until nothing is left to
    drive, writing the record under ``hold`` (the fleet's lock). With ``only`` (a CI job's
    targets) and no ``hold``: places those alone, once their wave is due, and ends once they
    ended or can no longer start; the record is only read."""

    def __init__(self, fleet: Fleet, record: Record, found: list[Target], phrase: str,
                 out: TextIO | None = None, *, only: frozenset[str] | None = None,
                 hold: Hold | None = None) -> None:
        self.fleet, self.settings, self.record = fleet, fleet.settings, record
        self.only, self.hold = only, hold
        self.store = blobs.store_for(fleet.settings)
        self.targets = {t.name: t for t in found}
        self.phrase = phrase
        self.children = ChildWindows(out)
        self.paused_until: dict[str, float] = {}
        self.restarts: Counter[str] = Counter()
        self.signals: list[int] = []
        self.finished: dict[str, View] = {}
        self.said: set[str] = set()
        self.log = structlog.get_logger().bind(fleet_run=record.id)

    def drive(self) -> int:
        with self._forwarding_signals():
            reached = time.monotonic()
            while True:
                try:
                    if self.hold is not None:
                        self.hold.check()  # LeaseLost: another runner may write the record
                    if self._step():
                        break
                    reached = time.monotonic()
                except GateRefused as exc:  # the shared state out of reach: a blip, or not
                    if time.monotonic() - reached > STATE_OUTAGE_SECONDS:
                        raise
                    self.log.warning("fleet_state_unreachable", error=exc.message)
                time.sleep(POLL_SECONDS if self.only is None or self._in_flight()
                           else WAIT_SECONDS)
        return self._conclude()

    def _step(self) -> bool:
        """Settle the children that ended, read where the fleet stands, claim what is due;
        whether this runner is done."""
        for name, code, last_line in self._ended():
            self._settle(name, code, last_line)
        self.record = with_abort(self.store, self.record)
        views = self._views()
        step = next_step(self.record.waves(), views, aborted=self.record.ended == "aborted")
        self._mark(step)
        if not self.signals:
            for name in step.drive:
                if self.only is None or name in self.only:
                    self._claim(name)
        return not self._in_flight() and (step.over or bool(self.signals)
                                          or self._own_settled(step, views))

    def _own_settled(self, step: Step, views: dict[str, View]) -> bool:
        """With ``only``: none of its targets is to drive now, and each ended, or the
        fleet stopped before it could start (a stopped fleet starts nothing new)."""
        if self.only is None or any(name in self.only for name in step.drive):
            return False
        return step.failed is not None or all(views[name].finished for name in self.only)

    def _ended(self) -> Iterator[tuple[str, int, str]]:
        """The targets this runner started whose window process exited since the last look."""
        return self.children.ended()

    def _in_flight(self) -> bool:
        return bool(self.children.live)

    def _change(self, change: Callable[[Record], Record]) -> None:
        """The record, changed; written only by the holder of the fleet's lock."""
        new = change(self.record)
        if new != self.record and self.hold is not None:
            write_record(self.store, new)
        self.record = new

    def _views(self) -> dict[str, View]:
        """Each target's view, read up to the first wave not wholly completed: no target
        after it can have started (a wave starts only once every earlier one completed)."""
        views: dict[str, View] = {}
        for wave in self.record.waves():
            for name in wave:
                views[name] = self.finished.get(name) or \
                    read_view(self.settings, self.record, name)
                if views[name].finished:
                    self.finished[name] = views[name]  # an ended target never changes again
            if not all(views[name].completed for name in wave):
                break
        return {name: views.get(name, View(name, PENDING)) for name in self.record.targets}

    def _mark(self, step: Step) -> None:
        if step.wave is None and self.record.ended is None:
            self._change(ending("completed", ""))
        elif step.failed is not None and self.record.ended is None:
            why = self.finished[step.failed].describe()
            self._change(ending("stopped", why))
            self.log.error("fleet_stopped", target=step.failed, reason=why)
        elif self.record.ended == "aborted":
            self._say_once("aborted", "fleet_abort_seen", reason=self.record.reason)
        elif step.wave is not None and self.record.ended is None:
            self._say_once(f"wave {step.wave}", "fleet_wave", wave=step.wave,
                           targets=", ".join(self.record.waves()[step.wave]))

    def _claim(self, name: str) -> None:
        if name in self.children.live or self.paused_until.get(name, 0.0) > time.monotonic():
            return
        target = self.targets.get(name)
        if target is None:
            raise ConfigError(f"{self.fleet.path}: target {name!r} of fleet run"
                              f" {self.record.id} is no longer listed.")
        argv = window_argv(self.fleet, "run", name, "--fleet-run", self.record.id,
                           "--confirm", self.phrase)
        self.children.start(name, argv + (["--skip-staging"] if self.record.skip_staging
                                          else []), child_env(self.settings, self.record, target),
                            output_file(self.settings, self.record, name))
        self.log.info("fleet_target_claimed", target=name)

    def _settle(self, name: str, code: int, last_line: str) -> None:
        """What a child's exit means for its target: its journal says, unless it has none."""
        if code == ExitCode.BUSY:  # another process holds it (the child of a runner that died,
            # a CI job's re-run, a window by hand): leave it to the holder, look again later
            self.paused_until[name] = time.monotonic() + BUSY_PAUSE_SECONDS
            self._say_once(f"busy {name}", "fleet_target_busy", target=name)
            return
        view = read_view(self.settings, self.record, name)
        if view.finished:
            self.log.info("fleet_target_ended", target=name, state=view.state,
                          exit_code=view.exit_code)
            return
        interrupted = code == ExitCode.INTERRUPTED or code < 0
        if not view.started and not interrupted:
            self._record_outcome(name, code, f"`window run` exited {code} without a window"
                                 + (f": {last_line}" if last_line else ""))
            return
        self.restarts[name] += 1
        if self.restarts[name] > MAX_RESTARTS:
            self._record_outcome(name, code, f"its window stopped unfinished {MAX_RESTARTS + 1}"
                                 f" times (last exit {code}): `window status --target {name}`")
        elif not self.signals:
            self.paused_until[name] = time.monotonic() + BUSY_PAUSE_SECONDS
            self.log.warning("fleet_target_unfinished", target=name, exit_code=code)

    def _record_outcome(self, name: str, code: int, why: str) -> None:
        record_outcome(self.settings, self.record, name, code, why)
        self.log.warning("fleet_target_not_run", target=name, exit_code=code, reason=why)

    def _say_once(self, key: str, event: str, **facts: Any) -> None:
        if key not in self.said:
            self.said.add(key)
            self.log.info(event, **facts)

    @contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """Ctrl-C or SIGTERM: the children get it too (each journals itself interrupted),
        no new target starts, and the runner waits for them before it exits."""
        def forward(signum: int, _frame: FrameType | None) -> None:
            self.signals.append(signum)
            self.children.signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _conclude(self) -> int:
        views = views_of(self.fleet, self.record)
        step = next_step(self.record.waves(), {v.name: v for v in views},
                    aborted=self.record.ended == "aborted")
        interrupted = bool(self.signals) and not step.over
        own = [v for v in views if self.only is None or v.name in self.only]
        code = exit_code(own, interrupted=interrupted)
        self.children.say(table(report(self.record, views)))
        self.children.say(conclusion(self.record, views, step, interrupted=interrupted))
        self.log.info("fleet_runner_finished", exit_code=code,
                      state=fleet_state(self.record, step))
        return code


def conclusion(record: Record, views: list[View], step: Step, *, interrupted: bool) -> str:
    """The runner's last word: how the fleet run stands and what to do next."""
    if step.wave is None:
        return f"fleet run {record.id} completed: all {len(views)} targets."
    if interrupted:
        return (f"fleet run {record.id} interrupted; `window fleet resume` continues it"
                " (interrupted targets resume where they stopped).")
    later = [n for w in record.waves()[step.wave + 1:] for n in w]
    not_started = f" Not started: {', '.join(later)}." if later else ""
    if record.ended == "aborted":
        return f"fleet run {record.id} was aborted ({record.reason}).{not_started}"
    if step.failed is not None:
        failed = next(v for v in views if v.name == step.failed)
        return f"fleet run {record.id} stopped: {failed.describe()}.{not_started}"
    return f"fleet run {record.id} goes on elsewhere; `window fleet status` follows it."


# the commands -------------------------------------------------------------------------------


@contextmanager
def fleet_hold(fleet: Fleet, command: str) -> Iterator[Hold]:
    """This process alone drives the fleet run: the fleet's lock, taken as a window takes its
    own (the state folder's lock, and with S3 the lease), or exit 6 at once."""
    hold = Hold(fleet.settings.for_fleet(), f"fleet {command}")
    if not hold.try_acquire():
        across = "" if fleet.spec.engine.kind == "celery" else (
            '; for a fleet across machines use Celery workers ([engine] kind = "celery") or'
            " the GitHub Actions workflow (`window init --fleet`)")
        raise Busy(f"another `window fleet` process drives the fleet run of {fleet.path}"
                   f" ({_holder(fleet, hold)}): one process drives a fleet run, and `window"
                   f" fleet status` follows it{across}.")
    try:
        yield hold
    finally:
        hold.release()


def _holder(fleet: Fleet, hold: Hold) -> str:
    holder = lease.current_lease(fleet.settings.for_fleet())
    if holder is not None:
        return f"{holder.describe()}; `window fleet resume` takes over once it expires"
    return f"pid {hold.lock.holder()} on this machine"


def summary(fleet: Fleet, found: list[Target]) -> str:
    names = [t.name for t in found]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (f"fleet {fleet.path.name}: window {fleet.settings.window.name!r} on {len(names)}"
            f" databases ({shown}): the canary {fleet.spec.canary or names[0]} alone, then"
            f" {fleet.spec.concurrency} at a time; a target that does not complete stops the"
            " waves.")


def _open(fleet: Fleet, confirm: str | None, *, skip_staging: bool, stdin: TextIO | None,
          only: frozenset[str] | None = None) -> tuple[Record, list[Target]]:
    """Check and confirm the fleet, then record a new fleet run (under the fleet's lock,
    which the caller holds); refused while the last one has not ended."""
    found = targets(fleet)
    _known(fleet, found, only)
    canary = fleet.spec.canary or found[0].name
    if only is not None and canary not in only:  # it alone would never see its wave
        raise UsageError(f"`window fleet run --target` starts with the canary ({canary});"
                         " the other targets' jobs follow with `window fleet resume"
                         " --target NAME --fleet-run ID`.")
    check_staging(fleet, found, skip_staging=skip_staging)
    config.require_contacts(fleet.settings.contacts)
    gates.confirm(fleet.settings, confirm, summary(fleet, found), stdin)
    gates.git_repo(fleet.settings)
    if fleet.spec.engine.kind == "celery":
        celery_engine().check_broker(fleet)  # before the fleet run is recorded
    store = blobs.store_for(fleet.settings)
    last = read_record(store)
    if last is not None and (why := unfinished(fleet, last)):
        raise GateRefused(f"fleet run {last.id} has not ended ({why}): `window fleet resume`"
                          " continues it, `window fleet abort` stops it; nothing was started.")
    names = [t.name for t in found]
    record = Record(new_fleet_id(), names, canary, fleet.spec.concurrency, skip_staging,
                    time.time(), who(), socket.gethostname())
    write_record(store, record)
    structlog.get_logger().info("fleet_started", fleet_run=record.id, targets=len(names),
                                canary=record.canary, concurrency=record.concurrency)
    return record, found


def open_run(fleet: Fleet, confirm: str | None, *, skip_staging: bool = False,
             stdin: TextIO | None = None) -> int:
    """``window fleet open``: record a new fleet run and run nothing; its engine (a CI
    workflow's jobs) places the targets with ``fleet resume --target NAME --fleet-run ID``."""
    with audited(fleet.settings, "fleet open"), fleet_hold(fleet, "open"):
        record, _ = _open(fleet, confirm, skip_staging=skip_staging, stdin=stdin)
    print(f"fleet run {record.id} opened: {len(record.targets)} targets, the canary"
          f" {record.canary} first; `window fleet resume --target NAME --fleet-run"
          f" {record.id}` runs a target's window.", flush=True)
    return ExitCode.COMPLETED


def run(fleet: Fleet, confirm: str | None, *, skip_staging: bool = False,
        stdin: TextIO | None = None, only: frozenset[str] | None = None) -> int:
    """``window fleet run``: start a fleet run and drive it to its end, holding the fleet's
    lock; with ``only`` (a CI job), open it and run those targets only."""
    with audited(fleet.settings, "fleet run"):
        with fleet_hold(fleet, "run") as hold:
            record, found = _open(fleet, confirm, skip_staging=skip_staging, stdin=stdin,
                                  only=only)
            if only is None:
                return _runner(fleet, record, found, hold=hold).drive()
        return _runner(fleet, record, found, only).drive()


def _runner(fleet: Fleet, record: Record, found: list[Target],
            only: frozenset[str] | None = None, *, hold: Hold | None = None) -> FleetRunner:
    """The built-in runner, or the one that sends the targets to Celery workers (celery is
    imported only then)."""
    if fleet.spec.engine.kind == "celery":
        return celery_engine().CeleryRunner(  # type: ignore[no-any-return]
            fleet, record, found, hold=hold)
    return FleetRunner(fleet, record, found, fleet.settings.window.confirm_phrase, only=only,
                       hold=hold)


def _known(fleet: Fleet, found: list[Target], only: frozenset[str] | None) -> None:
    """``--target``: targets of this fleet, on the built-in engine (a CI job is the engine)."""
    if only is None:
        return
    if fleet.spec.engine.kind != "builtin":
        raise UsageError(f"{fleet.path}: --target is for the built-in engine (a CI job per"
                         f" target); the {fleet.spec.engine.kind} engine places targets itself.")
    names = {t.name for t in found}
    if unknown := sorted(only - names):
        raise UsageError(f"{fleet.path}: {unknown[0]!r} is not one of the fleet's targets.")


def celery_engine() -> ModuleType:
    """The Celery engine's module: celery loads only for a fleet that names it."""
    try:
        from orchestrator.fleet import celery_engine as engine  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError('[engine] kind = "celery" needs Celery installed:'
                          " pip install 'pgwindow[celery]'.") from exc
    return engine


def resume(fleet: Fleet, only: frozenset[str] | None = None, fleet_run: str | None = None
           ) -> int:
    """``window fleet resume``: drive the existing fleet run again (it was confirmed when it
    started), holding the fleet's lock: interrupted targets resume, and the waves go on only
    if nothing failed. With ``only`` (a CI job), run those targets of it, without the lock;
    with ``fleet_run``, only if that is the fleet run in the state."""
    with audited(fleet.settings, "fleet resume"):
        if only is not None:
            return _resume(fleet, only, fleet_run, None)
        with fleet_hold(fleet, "resume") as hold:
            return _resume(fleet, only, fleet_run, hold)


def _resume(fleet: Fleet, only: frozenset[str] | None, fleet_run: str | None,
            hold: Hold | None) -> int:
    _, record = existing(fleet)
    if fleet_run is not None and record.id != fleet_run:
        raise GateRefused(f"the fleet run in the state is {record.id}, not {fleet_run}:"
                          " nothing was run.")
    found = targets(fleet)
    _known(fleet, found, only)
    if missing := sorted(set(record.targets) - {t.name for t in found}):
        raise ConfigError(f"{fleet.path}: target {missing[0]!r} of fleet run {record.id}"
                          " is no longer listed.")
    structlog.get_logger().info("fleet_resumed", fleet_run=record.id)
    return _runner(fleet, record, found, only, hold=hold).drive()


def abort(fleet: Fleet, confirm: str | None, stdin: TextIO | None = None) -> int:
    """``window fleet abort``: no runner starts another target, and every target with an
    unfinished window rolls back (``window abort --target``); completed ones stay so."""
    with audited(fleet.settings, "fleet abort"):
        store, record = existing(fleet)
        step = next_step(record.waves(), {v.name: v for v in views_of(fleet, record)},
                         aborted=record.ended == "aborted")
        if (state := fleet_state(record, step)) in ("completed", "aborted"):
            # completed: its targets' journals say so, whoever wrote the record (a CI
            # workflow's jobs write none)
            print(f"fleet run {record.id} {state} already: nothing to abort.")
            return ExitCode.COMPLETED
        found = {t.name: t for t in targets(fleet)}
        gates.confirm(fleet.settings, confirm, f"fleet run {record.id}: abort stops the waves"
                      " and rolls back every target whose window is in flight.", stdin)
        record = request_abort(store, record)
        structlog.get_logger().warning("fleet_aborted", fleet_run=record.id)
        codes = {ExitCode.INTERRUPTED if c < 0 else c
                 for c in _abort_in_flight(fleet, record, found)}
        views = views_of(fleet, record)
        print(table(report(record, views)), flush=True)
        return next((c for c in SEVERITY if c in codes), ExitCode.COMPLETED)


def _abort_in_flight(fleet: Fleet, record: Record, found: dict[str, Target]) -> set[int]:
    """``window abort`` every unfinished target, again until none is left and a runner that
    read the record just before the mark has had time to show what it started."""
    children, aborted, codes = ChildWindows(), set[str](), set[int]()
    settle = time.monotonic() + ABORT_SETTLE_SECONDS
    while True:
        fresh = [v.name for v in views_of(fleet, record)
                 if v.started and not v.finished and v.name not in aborted]
        if not fresh and time.monotonic() >= settle:
            return codes
        for name in fresh:
            if name not in found:
                raise ConfigError(f"{fleet.path}: target {name!r} of fleet run {record.id} is"
                                  " no longer listed; `window abort --target` it by hand.")
            argv = window_argv(fleet, "abort", name, "--confirm",
                               fleet.settings.window.confirm_phrase)
            children.start(name, argv, child_env(fleet.settings, record, found[name]),
                           output_file(fleet.settings, record, name))
        for name, code, _ in children.ended(wait=True):
            codes.add(code)
            aborted.add(name)
        time.sleep(POLL_SECONDS)
