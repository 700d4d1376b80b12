"""What ``window`` itself costs: whole windows whose commands do nothing, on a small shop.

Each window is ``window run`` on a project made by ``orchestrator.demo.write_project``: the
migration is ``true`` (rehearsed on staging in url mode, then run on production), only the
built-in checks run, and the banner commands write ``date +%s.%N`` into ``banner-on.at`` and
``banner-off.at`` so the moment the banner went up and the moment it came down are the
commands' own clocks. Everything is read back from what the window leaves, never guessed:

- the window process's spawn and exit, timed here (the wall time a user waits);
- ``.window/journal.sqlite``: the run row, each phase row (started/finished) and each child
  process (``children``: started/ended of pg_dump, pg_restore, the migrate and banner
  commands);
- ``.window/audit.jsonl``: every event with its timestamp, for where the gaps fall.

Overhead = wall time minus the time spent inside child processes (as journaled). A child's
``ended_at`` is written once ``orchestrator.proc`` notices the exit, at its next 0.1 s poll, so
the journaled child time holds some of window's own latency: ``direct_tools`` times the same
pg_dump, pg_restore --list and pg_restore by hand on the same database, to show how much.

Added downtime = banner up to banner down (the ``date`` files) minus the migrate command (its
``children`` row) and the checks (the ``post_check`` phase row: the built-in checks run
in-process, not as children).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import raw
from orchestrator.commands import demo
from orchestrator.postgres import tools
from orchestrator.postgres.cluster import Cluster

WINDOWS = 5
WINDOW_TIMEOUT_S = 300
BANNER_ON = "date +%s.%N > banner-on.at"
BANNER_OFF = "date +%s.%N > banner-off.at"


@dataclass(frozen=True)
class Span:
    label: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Mark:
    at: float
    label: str


@dataclass
class Window:
    """One window run and the timestamps it left behind (Unix seconds, this machine)."""

    exit_code: int
    spawned: float
    exited: float
    created: float
    phases: list[Span] = field(default_factory=list)
    children: list[Span] = field(default_factory=list)  # label is "phase: command"
    marks: list[Mark] = field(default_factory=list)  # audit events
    banner_up: float | None = None
    banner_down: float | None = None
    output_tail: str = ""
    cpu_s: float = 0.0  # user + system of the window process and every child it waited for

    @property
    def wall_s(self) -> float:
        return self.exited - self.spawned

    @property
    def children_s(self) -> float:
        return covered(self.children, self.spawned, self.exited)

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.children_s

    def phase(self, name: str) -> Span | None:
        return next((p for p in self.phases if p.label == name), None)

    def child_s(self, phase: str) -> float:
        return sum(c.seconds for c in self.children if c.label.startswith(f"{phase}: "))

    def event_at(self, name: str) -> float | None:
        return next((m.at for m in self.marks if m.label == name), None)


def covered(spans: list[Span], start: float, end: float) -> float:
    """Seconds of [start, end] inside any of ``spans`` (overlaps counted once)."""
    total, reached = 0.0, start
    for span in sorted(spans, key=lambda s: s.start):
        lo, hi = max(span.start, reached), min(span.end, end)
        if hi > lo:
            total += hi - lo
            reached = hi
    return total


def write(folder: Path) -> Path:
    """A project whose every command does nothing; its config path."""
    return demo.write_project(folder, "SELECT 1;\n", migrate="true", banner_on=BANNER_ON,
                              banner_off=BANNER_OFF, checks="")


def run(config: Path, window: list[str], env: dict[str, str]) -> Window:
    """``window run`` to its end, output to ``window.log``; then what it left behind."""
    log = config.parent / "window.log"
    with log.open("w") as out:
        spawned = time.time()
        with subprocess.Popen([*window, "run", "--config", str(config), "--confirm",
                               demo.PHRASE], cwd=config.parent, env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) as child:
            try:
                _, status, usage = wait4(child.pid, WINDOW_TIMEOUT_S)
            except TimeoutError:
                child.kill()
                raise
            exited = time.time()
            child.returncode = os.waitstatus_to_exitcode(status)
    state = config.parent / ".window"
    result = read_journal(state / "journal.sqlite", child.returncode, spawned, exited)
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.marks = read_audit(state / "audit.jsonl")
    result.banner_up = read_clock(config.parent / "banner-on.at")
    result.banner_down = read_clock(config.parent / "banner-off.at")
    result.output_tail = "\n".join(log.read_text().splitlines()[-15:])
    return result


def wait4(pid: int, timeout_s: float) -> tuple[int, int, resource.struct_rusage]:
    """``os.wait4`` with a deadline: the exit status and resource usage of ``pid``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = os.wait4(pid, os.WNOHANG)
        if found[0] == pid:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"window run (pid {pid}) still running after {timeout_s:.0f} s")
        time.sleep(0.01)


def read_journal(path: Path, exit_code: int, spawned: float, exited: float) -> Window:
    db = sqlite3.connect(path)
    try:
        run_id, created = db.execute(
            "SELECT run_id, created_at FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
        phases = [Span(*row) for row in db.execute(
            "SELECT name, started_at, finished_at FROM phases WHERE run_id = ?"
            " AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY started_at",
            (run_id,))]
        children = [Span(f"{phase}: {label}", start, end) for phase, label, start, end in
                    db.execute("SELECT phase, label, started_at, ended_at FROM children"
                               " WHERE run_id = ? AND ended_at IS NOT NULL ORDER BY started_at",
                               (run_id,))]
    finally:
        db.close()
    return Window(exit_code, spawned, exited, created, phases, children)


def read_audit(path: Path) -> list[Mark]:
    marks = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            event = json.loads(line)
            at = datetime.fromisoformat(event["at"]).timestamp()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        phase = f" [{event['phase']}]" if event.get("phase") else ""
        command = f" `{event['command']}`" if event.get("command") else ""
        marks.append(Mark(at, f"{event.get('event', '?')}{command}{phase}"))
    return marks


def read_clock(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


# Where the time goes ----------------------------------------------------------------------

def segments(w: Window) -> list[tuple[str, float]]:
    """The overhead cut into consecutive pieces that add up to it exactly: each phase's own
    time (its children taken out) and the stretches before, between and after the phases."""
    if not w.phases:
        return [("whole window (no phase ran)", w.overhead_s)]
    first, last = w.phases[0], w.phases[-1]
    finished = w.event_at("window_finished") or last.end
    pieces = [("start-up: spawn to the run's journal row (interpreter, imports, config,"
               " gates, locks)", w.created - w.spawned),
              ("journal row to the first phase", first.start - w.created)]
    pieces += [(f"{p.label} (own time, children excluded)", p.seconds - w.child_s(p.label))
               for p in w.phases]
    pieces.append(("between phases (transitions, journal commits)",
                   sum(b.start - a.end for a, b in itertools.pairwise(w.phases))))
    pieces.append(("last phase to window_finished (finishing steps, reports)",
                   finished - last.end))
    pieces.append(("window_finished to process exit", w.exited - finished))
    return pieces


def gaps(w: Window, top: int = 6) -> list[tuple[str, float]]:
    """The longest stretches of the timeline (audit events and child starts and ends) in
    which no child ran: window's own time, named by the events on either side."""
    marks = [Mark(w.spawned, "process spawned"), Mark(w.exited, "process exited"), *w.marks]
    for child in w.children:
        marks += [Mark(child.start, f"`{child.label}` started"),
                  Mark(child.end, f"`{child.label}` ended")]
    marks.sort(key=lambda m: m.at)
    found = [(f"{a.label} -> {b.label}", (b.at - a.at) - covered(w.children, a.at, b.at))
             for a, b in itertools.pairwise(marks)]
    return sorted(found, key=lambda item: -item[1])[:top]


@dataclass(frozen=True)
class Downtime:
    """Banner up to banner down, and what of it is the user's own work."""

    span_s: float
    migrate_s: float
    checks_s: float
    pieces: list[tuple[str, float]]

    @property
    def added_s(self) -> float:
        return self.span_s - self.migrate_s - self.checks_s


def downtime(w: Window) -> Downtime | None:
    phases = {p.label: p for p in w.phases}
    up, down = w.banner_up, w.banner_down
    try:
        banner_on, migrate, check, banner_off = (phases[n] for n in
                                                 ("banner_on", "migrate", "post_check",
                                                  "banner_off"))
    except KeyError:
        return None
    if up is None or down is None:
        return None
    pieces = [
        ("banner up to the end of banner_on (the command's exit poll, write_stats_settle,"
         " write counters)",
         banner_on.end - up),
        ("banner_on to migrate (transition)", migrate.start - banner_on.end),
        ("migrate phase without its command (drain, monitor, checkpoints)",
         migrate.seconds - w.child_s("migrate")),
        ("migrate command (subtracted)", w.child_s("migrate")),
        ("migrate to post_check (transition)", check.start - migrate.end),
        ("post_check: the checks (subtracted)", check.seconds),
        ("post_check to banner_off (transition)", banner_off.start - check.end),
        ("banner_off start to banner down (sh, date)", down - banner_off.start),
    ]
    return Downtime(down - up, w.child_s("migrate"), check.seconds, pieces)


def direct_tools(cluster: Cluster, dbname: str, workdir: Path
                 ) -> tuple[dict[str, float], float]:
    """The backup's three programs run by hand on ``dbname`` with bench.raw's options (the
    backup's own): pg_dump the median of three, then pg_restore --list and pg_restore once.
    Their wall seconds, and the CPU seconds of one of each (user + system, as the window's
    process tree counts them; the server's work is in neither)."""
    major = int(cluster.psql("SHOW server_version_num")) // 10000
    archive, scratch = workdir / "direct-dump", f"{dbname}_directrestore"
    dumps, dump_cpu = [], []
    try:
        for _ in range(raw.DUMP_RUNS):
            shutil.rmtree(archive, ignore_errors=True)
            before = children_cpu()
            dumps.append(raw.dump(cluster, dbname, archive, major))
            dump_cpu.append(children_cpu() - before)
        before = children_cpu()
        listed = raw.timed([str(tools.find("pg_restore", major)), "--list", str(archive)],
                           raw.libpq_env(cluster, dbname))
        restored = raw.restore(cluster, archive, scratch, major)
        rest_cpu = children_cpu() - before  # (psql's CREATE DATABASE included: tiny)
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {scratch}")
        shutil.rmtree(archive, ignore_errors=True)
    return ({"backup: pg_dump": statistics.median(dumps), "backup: pg_restore --list": listed,
             "backup: pg_restore": restored}, statistics.median(dump_cpu) + rest_cpu)


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def child_times(windows: list[Window]) -> dict[str, float]:
    """Each child's journaled seconds, by "phase: command", the median over the windows."""
    by_label: dict[str, list[float]] = {}
    for window in windows:
        for child in window.children:
            by_label.setdefault(child.label, []).append(child.seconds)
    return {label: statistics.median(times) for label, times in by_label.items()}


def median_window(windows: list[Window]) -> Window:
    """The window whose overhead is the median one: its gaps stand for the others'."""
    ranked = sorted(windows, key=lambda w: w.overhead_s)
    return ranked[(len(ranked) - 1) // 2]


def median_pieces(rows: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """Piece by piece, the median over windows (the pieces' medians need not add up to the
    median total)."""
    labels = [label for label, _ in rows[0]]
    by_label = [dict(row) for row in rows]
    return [(label, statistics.median(r.get(label, 0.0) for r in by_label)) for label in labels]
