"""A fleet: the same maintenance window on many databases, in waves, placed by an engine.

Each target's window is a child ``window run --target NAME --fleet-run ID``: its own journal,
lock and lease (``Settings.for_target``). The child's own gate 4 is the claim on the target,
and the fleet run id it is tagged with makes the call idempotent: a target gets one window per
fleet run whatever places it (the built-in runner, a Celery worker, a GitHub Actions job) and
however often, and an interrupted one is driven to its end.

This module holds what the engines and ``window fleet status`` read. The fleet's record
(``fleet.json`` beside the shared config's journal) holds the id, the targets in order, the
canary, the waves' size, and whether the fleet stopped and why. One process writes it: the
``window fleet run`` or ``resume`` that holds the fleet's lock (``Settings.for_fleet``: the
state folder's lock, and with S3 its lease, as a window's); ``window fleet abort`` writes its
own ``fleet-abort.json`` beside it. Where each target stands is read from its own journal (and
``fleet-outcome.json`` in its state, for a target whose ``window run`` ended without a
window); from that, ``next_step`` gives the next step, the fleet's state and its exit code.

Waves: the canary alone, then ``concurrency`` targets at a time, in order. A wave starts only
once every earlier target completed; a target that ended any other way stops the fleet: no new
target starts and those in flight finish (the failed one has rolled itself back).

``fleet_spec`` reads fleet.toml; ``fleet_runner`` runs the children and the run, resume and
abort commands.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.config import Settings
from orchestrator.engine import holding
from orchestrator.engine.identity import who
from orchestrator.engine.machine import EXIT_CODES, TERMINAL, State
from orchestrator.engine.rows import Run
from orchestrator.errors import ExitCode, UsageError
from orchestrator.fleet.spec import Fleet, waves
from orchestrator.store import blobs, lease

RECORD = "fleet.json"
ABORT = "fleet-abort.json"  # beside the record: `window fleet abort`, for the runner to see
OUTCOME = "fleet-outcome.json"  # in a target's state: its `window run` ended without a window
# The fleet's exit code: the worst of its targets', worst first.
SEVERITY = (ExitCode.NEEDS_ATTENTION, ExitCode.FAILED, ExitCode.REFUSED, ExitCode.USAGE,
            ExitCode.BUSY, ExitCode.INTERRUPTED)
PENDING, NOT_RUN = "pending", "not_run"


# the fleet's record -------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One fleet run: what places its targets, and how it ended."""

    id: str
    targets: list[str]
    canary: str
    concurrency: int
    skip_staging: bool
    started_at: float
    started_by: str
    host: str
    ended: str | None = None  # completed | stopped | aborted
    reason: str | None = None

    def waves(self) -> list[list[str]]:
        return waves(self.targets, self.canary, self.concurrency)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in known})


def new_fleet_id() -> str:
    return "fleet_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(2)


def read_record(store: blobs.Store) -> Record | None:
    """The fleet run in the state, with a ``window fleet abort`` of it applied."""
    blob = store.get(RECORD)
    if blob is None:
        return None
    return with_abort(store, Record.parse(blob.data))


def with_abort(store: blobs.Store, record: Record) -> Record:
    """``record`` with a ``window fleet abort`` of it applied."""
    request = store.get(ABORT)
    if request is not None and (asked := json.loads(request.data)).get("fleet_run") == record.id:
        return ending("aborted", str(asked["reason"]))(record)
    return record


def write_record(store: blobs.Store, record: Record) -> None:
    """A plain write: only the holder of the fleet's lock writes the record."""
    store.put(RECORD, record.dump())


def request_abort(store: blobs.Store, record: Record) -> Record:
    """``window fleet abort``: recorded beside the record, which the runner alone writes."""
    reason = f"aborted by {who()} on {socket.gethostname()}"
    store.put(ABORT, json.dumps({"fleet_run": record.id, "reason": reason,
                                 "at": time.time()}).encode())
    return ending("aborted", reason)(record)


def ending(ended: str, reason: str) -> Callable[[Record], Record]:
    """The first ending said wins, except that an abort overrides a stop (it also ends what
    is still in flight); the reasons are kept in order."""
    def end(r: Record) -> Record:
        if r.ended is None:
            return replace(r, ended=ended, reason=reason)
        if ended == "aborted" and r.ended == "stopped":
            return replace(r, ended=ended, reason=f"{r.reason}; then {reason}")
        return r

    return end


def existing(fleet: Fleet) -> tuple[blobs.Store, Record]:
    """The shared state and the fleet's record in it; a UsageError before any fleet ran."""
    store = blobs.store_for(fleet.settings)
    record = read_record(store)
    if record is None:
        raise UsageError(f"no fleet has run with {fleet.config_path} yet:"
                         " `window fleet run` starts one.")
    return store, record


def record_outcome(settings: Settings, record: Record, name: str, code: int, why: str) -> None:
    """A target whose ``window run`` ended without a window: in the target's own state,
    written by whatever placed it (one placement of a target at a time)."""
    outcome = {"fleet_run": record.id, "exit_code": code, "at": time.time(), "why": why[:300]}
    blobs.store_for(settings.for_target(name)).put(OUTCOME, json.dumps(outcome).encode())


def _outcome(settings: Settings, record: Record, name: str) -> dict[str, Any] | None:
    blob = blobs.store_for(settings.for_target(name)).get(OUTCOME)
    outcome = json.loads(blob.data) if blob else None
    return outcome if outcome and outcome.get("fleet_run") == record.id else None

# where each target stands -------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    name: str
    state: str  # pending, not_run, or the window's state
    run_id: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    note: str | None = None

    @property
    def started(self) -> bool:
        return self.run_id is not None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL or self.state == NOT_RUN

    @property
    def completed(self) -> bool:
        return self.finished and self.exit_code == ExitCode.COMPLETED

    def describe(self) -> str:
        return f"{self.name} ended {self.state} (exit {self.exit_code})" + \
            (f": {self.note}" if self.note else "")


def of_run(name: str, run: Run) -> View:
    code = run.exit_code
    if code is None and run.state in TERMINAL:
        code = EXIT_CODES[State(run.state)]
    return View(name, run.state, run.run_id, code, run.created_at, run.finished_at)


def read_view(settings: Settings, record: Record, name: str) -> View:
    """A terminal tagged run is the truth; else an outcome the fleet recorded; else the
    unfinished run, or nothing yet."""
    run = holding.latest_tagged_run(settings.for_target(name), record.id)
    if run is not None and run.state in TERMINAL:
        return of_run(name, run)
    if outcome := _outcome(settings, record, name):
        return View(name, NOT_RUN, run.run_id if run else None, outcome["exit_code"],
                    run.created_at if run else None, outcome["at"], outcome["why"])
    return of_run(name, run) if run else View(name, PENDING)


def views_of(fleet: Fleet, record: Record) -> list[View]:
    return [read_view(fleet.settings, record, name) for name in record.targets]


def held(settings: Settings) -> bool:
    """Whether a live process or runner drives this (target-scoped) window now: a cheap look
    that spares starting a child only to hear it is busy. The child's own gate decides."""
    if settings.state.backend == "s3":
        holder = lease.current_lease(settings)
        return holder is not None and holder.live()
    try:
        fd = os.open(settings.state_dir / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here at once
    return False


@dataclass(frozen=True)
class Step:
    drive: list[str]  # claim these now: the unfinished ones, then the wave's new ones
    wave: int | None  # the first wave not wholly completed; None: the fleet completed
    failed: str | None  # the first target that ended other than completed
    over: bool  # nothing is left for any runner to drive


def next_step(fleet_waves: list[list[str]], views: Mapping[str, View], *, aborted: bool) -> Step:
    """A runner's next move, from what the targets' journals say."""
    names = [n for wave in fleet_waves for n in wave]
    failed = next((n for n in names if views[n].finished and not views[n].completed), None)
    wave = next((i for i, w in enumerate(fleet_waves)
                 if not all(views[n].completed for n in w)), None)
    if aborted:
        return Step([], wave, failed, over=True)
    drive = [n for n in names if views[n].started and not views[n].finished]
    if failed is None and wave is not None:
        drive += [n for n in fleet_waves[wave] if not views[n].started
                  and not views[n].finished]
    return Step(drive, wave, failed, over=not drive)


def fleet_state(record: Record, step: Step) -> str:
    if record.ended == "aborted" or step.wave is None:
        return record.ended or "completed"
    if step.failed is not None:
        return "stopped" if step.over else "stopping"
    return "running"


def unfinished(fleet: Fleet, record: Record) -> str | None:
    """Why ``record`` has not ended, as a clause (None once it has): a step is left to drive,
    or a window of it is still in flight."""
    views = {v.name: v for v in views_of(fleet, record)}
    step = next_step(record.waves(), views, aborted=record.ended == "aborted")
    in_flight = sorted(n for n, v in views.items() if v.started and not v.finished)
    if not step.over:
        return fleet_state(record, step)
    return f"{fleet_state(record, step)}, {', '.join(in_flight)} in flight" if in_flight else None


def exit_code(views: Sequence[View], *, interrupted: bool = False) -> int:
    """0 when every target completed; else the worst target's code (5 for a runner stopped
    mid-way, 3 for targets that never started)."""
    if all(v.completed for v in views):
        return ExitCode.COMPLETED
    codes = {v.exit_code for v in views if v.finished} | \
        ({ExitCode.INTERRUPTED} if interrupted else set())
    return next((c for c in SEVERITY if c in codes), ExitCode.REFUSED)


# status -------------------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def report(record: Record, views: list[View], driven: Mapping[str, bool] | None = None
           ) -> dict[str, Any]:
    """``window fleet status --json``: the fleet run, and every target's window; ``driven``
    says which unfinished windows a live process holds (the others are interrupted)."""
    fleet_waves = record.waves()
    wave_of = {n: i for i, w in enumerate(fleet_waves) for n in w}
    by_name = {v.name: v for v in views}
    step = next_step(fleet_waves, by_name, aborted=record.ended == "aborted")
    in_order = [by_name[n] for wave in fleet_waves for n in wave]
    return {
        "fleet_run": record.id, "state": fleet_state(record, step), "reason": record.reason,
        "wave": step.wave, "waves": len(fleet_waves), "canary": record.canary,
        "concurrency": record.concurrency, "skip_staging": record.skip_staging,
        "started_at": _iso(record.started_at), "started_by": record.started_by,
        "host": record.host, "exit_code": exit_code(views),
        "stopped_by": step.failed if record.ended != "aborted" else None,
        "targets": [{"name": v.name, "wave": wave_of[v.name], "state": v.state,
                     "run_id": v.run_id, "exit_code": v.exit_code,
                     "interrupted": v.started and not v.finished and driven is not None
                     and not driven.get(v.name, False),
                     "started_at": _iso(v.started_at), "finished_at": _iso(v.finished_at),
                     "note": v.note} for v in in_order],
    }


def table(facts: dict[str, Any]) -> str:
    wave = "-" if facts["wave"] is None else f"{facts['wave']} of {facts['waves'] - 1}"
    lines = [f"fleet run {facts['fleet_run']}: {facts['state']}"
             + (f" ({facts['reason']})" if facts["reason"] else ""),
             f"  started {facts['started_at']} by {facts['started_by']} on {facts['host']};"
             f" canary {facts['canary']}, concurrency {facts['concurrency']}, wave {wave}",
             f"  {'target':<20} {'wave':>4}  {'state':<23} {'exit':>4}  {'run':<22} finished"]
    for t in facts["targets"]:
        code = "" if t["exit_code"] is None else str(t["exit_code"])
        shown = f"{t['state']} (interrupted)" if t["interrupted"] else t["state"]
        lines.append(f"  {t['name']:<20} {t['wave']:>4}  {shown:<23} {code:>4}"
                     f"  {t['run_id'] or '-':<22} {t['finished_at'] or '-'}"
                     + (f"  {t['note']}" if t["note"] else ""))
    return "\n".join(lines)


def status(fleet: Fleet, as_json: bool) -> str:
    """``window fleet status``: the table, or the report as JSON."""
    _, record = existing(fleet)
    views = views_of(fleet, record)
    driven = {v.name: held(fleet.settings.for_target(v.name)) for v in views
              if v.started and not v.finished}
    facts = report(record, views, driven)
    return json.dumps(facts, indent=2) if as_json else table(facts)

