"""A fleet: the same maintenance window on many databases, in waves, by any number of runners.

Each target's window is a child ``window run --target NAME --fleet-run ID``: its own journal,
lock and lease (``Settings.for_target``). The child's own gate 4 is the claim on the target,
and the fleet run id it is tagged with makes the call idempotent: a target gets one window per
fleet run however many runners ask, and an interrupted one is driven to its end.

This module holds what every runner and ``window fleet status`` read. The fleet's record
(``fleet.json`` beside the shared config's journal) holds only what every runner must agree
on: the id, the targets in order, the canary, the waves' size, and whether the fleet stopped
and why. Where each target stands is read from its own journal; from that, ``plan`` gives the
next step, the fleet's state and its exit code.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.config import Settings
from orchestrator.engine import holding
from orchestrator.engine.machine import EXIT_CODES, TERMINAL, State
from orchestrator.engine.rows import Run
from orchestrator.errors import ExitCode, GateRefused, UsageError
from orchestrator.fleet.spec import Fleet, waves
from orchestrator.store import blobs, lease

RECORD = "fleet.json"
# The fleet's exit code: the worst of its targets', worst first.
SEVERITY = (ExitCode.NEEDS_ATTENTION, ExitCode.FAILED, ExitCode.REFUSED, ExitCode.USAGE,
            ExitCode.BUSY, ExitCode.INTERRUPTED)
PENDING, NOT_RUN = "pending", "not_run"


# the fleet's record -------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What every runner of one fleet run agrees on; ``outcomes`` holds targets whose
    ``window run`` ended without a window (nothing pending, or refused before starting)."""

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
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def waves(self) -> list[list[str]]:
        return waves(self.targets, self.canary, self.concurrency)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> Record:
        return cls(**json.loads(data))


def new_fleet_id() -> str:
    return "fleet_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(2)


def read_record(store: blobs.Store) -> Record | None:
    blob = store.get(RECORD)
    return Record.parse(blob.data) if blob else None


def begin(store: blobs.Store, fresh: Record, ended_quietly: Callable[[Record], bool]
          ) -> tuple[Record, bool]:
    """Start ``fresh``, or join the fleet run under way: two runners started together agree
    on one id (the conditional write lets one win; the other reads it). An ended run is
    replaced once ``ended_quietly`` says none of its targets is still in flight."""
    while True:
        blob = store.get(RECORD)
        current = Record.parse(blob.data) if blob else None
        if current is not None and current.ended is None:
            return current, True
        if current is not None and not ended_quietly(current):
            raise GateRefused(f"fleet run {current.id} {current.ended}, but targets are still"
                              " in flight: `window fleet status` follows them; start again"
                              " once they end.")
        try:
            store.put(RECORD, fresh.dump(), if_match=blob.etag if blob else None,
                      if_none_match=blob is None)
        except blobs.Conflict:
            continue  # another runner wrote first: read what it wrote
        return fresh, False


def update(store: blobs.Store, fleet_id: str, change: Callable[[Record], Record]
           ) -> Record | None:
    """Compare-and-swap ``change`` into the record of ``fleet_id``; None once a newer fleet
    run replaced it (the old one had ended, every target quiet)."""
    while True:
        blob = store.get(RECORD)
        current = Record.parse(blob.data) if blob else None
        if blob is None or current is None or current.id != fleet_id:
            return None
        new = change(current)
        if new == current:
            return current
        try:
            store.put(RECORD, new.dump(), if_match=blob.etag)
        except blobs.Conflict:
            continue
        return new


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
    if outcome := record.outcomes.get(name):
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

