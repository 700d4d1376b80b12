"""``python -m bench.celery_fleet``: a fleet of small databases run by the built-in runner and by
two Celery workers (RabbitMQ on 127.0.0.1:5672), at the same concurrency, on a throwaway
cluster; then the Celery run again with one worker killed (SIGKILL, with its windows) in the
middle of a wave and started again.

``BENCH_FLEET`` sets the number of databases (default 40), ``BENCH_CONCURRENCY`` the waves'
size (default 4: two workers taking 2 windows each), ``BENCH_BROKER`` the broker URL. Each run
gets its own databases and project folder. Prints one table; every target must end exactly
once (one completed window in its journal, one row in its applied_log), else exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import report
from orchestrator import config
from orchestrator.commands import demo
from orchestrator.engine import holding
from orchestrator.postgres.cluster import Cluster

BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
RUN_TIMEOUT_S = 1800


# Applies the migration only if its own table says it is pending (as Prisma or Flyway do),
# and counts each application: a window run twice, or two at once, shows as two rows.
MIGRATE_ONCE = (
    'psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS applied_log'
    ' (at timestamptz DEFAULT now())" "$DATABASE_URL"'
    ' && if [ "$(psql -X -At -c "SELECT count(*) FROM applied_log" "$DATABASE_URL")" = 0 ];'
    ' then psql -X -q -v ON_ERROR_STOP=1 -1 -f migration.sql'
    ' -c "INSERT INTO applied_log DEFAULT VALUES" "$DATABASE_URL"; fi')


@dataclass
class Outcome:
    label: str
    exit_code: int
    wall_s: float
    targets: int
    once: int  # targets with exactly one window, completed, migrated once


class Fleet:
    def __init__(self, cluster: Cluster, root: Path, label: str, *, size: int,
                 concurrency: int, engine: str) -> None:
        self.root, self.label = root / label, label
        self.names = [f"db{i:02d}" for i in range(size)]
        self.env = {**os.environ, "NO_COLOR": "1", "BROKER_URL": BROKER}
        self.env.pop("DATABASE_URL", None)
        self.env["DATABASE_URL_STAGING"] = demo.create_shop(cluster, f"{label}_staging")
        for name in self.names:
            self.env[f"{name.upper()}_URL"] = demo.create_shop(cluster, f"{label}_{name}")
        migrate = MIGRATE_ONCE
        text = demo.write_project(self.root, demo.GOOD_MIGRATION, migrate=migrate).read_text()
        anchor = 'url_env = "DATABASE_URL_STAGING"'
        (self.root / "window.toml").write_text(text.replace(anchor, f"{anchor}\nskip = true"))
        entries = "".join(f'\n[[targets]]\nname = "{n}"\nurl_env = "{n.upper()}_URL"\n'
                          for n in self.names)
        self.queue = f"window.bench.{uuid.uuid4().hex[:8]}"
        engine_toml = ("" if engine == "builtin" else '\n[engine]\nkind = "celery"\n'
                       f'broker_env = "BROKER_URL"\nqueue = "{self.queue}"\n')
        (self.root / "fleet.toml").write_text(
            f"concurrency = {concurrency}\n{entries}{engine_toml}")
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{log}.log").open("ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "orchestrator", "fleet", *args],
                                       cwd=self.root, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def worker(self, name: str, concurrency: int) -> subprocess.Popen[bytes]:
        return self.start("worker", "fleet.toml", "--concurrency", str(concurrency),
                          "--hostname", f"{name}.{self.queue}@bench", log=name)

    def run(self) -> subprocess.Popen[bytes]:
        return self.start("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging",
                          log="submitter")

    def completed(self) -> int:
        status = subprocess.run([sys.executable, "-m", "orchestrator", "fleet", "status",
                                 "fleet.toml", "--json"], cwd=self.root, env=self.env,
                                capture_output=True, text=True, check=False)
        facts = json.loads(status.stdout) if status.returncode == 0 else {"targets": []}
        return sum(t["state"] == "completed" for t in facts["targets"])

    def exactly_once(self) -> int:
        settings = config.load(self.root / "window.toml")
        once = 0
        for name in self.names:
            journal = holding.reader(settings.for_target(name))
            runs = []
            if journal is not None:
                with journal:
                    runs = journal.runs()
            with psycopg.connect(self.env[f"{name.upper()}_URL"], autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM applied_log").fetchone()
            once += [r.state for r in runs] == ["completed"] and row == (1,)
        return once

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def kill_tree(pid: int) -> None:
    parents: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {pid}, True
    while grew:
        below = {c for c, p in parents.items() if p in tree} - tree
        tree |= below
        grew = bool(below)
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            continue


def timed(fleet: Fleet, *, workers: int, per_worker: int, kill_at: int | None) -> Outcome:
    started = [fleet.worker(f"worker-{i}", per_worker) for i in range(workers)]
    begin = time.monotonic()
    submitter = fleet.run()
    if kill_at is not None:
        while fleet.completed() < kill_at and submitter.poll() is None:
            time.sleep(0.5)
        kill_tree(started[0].pid)  # mid-wave: its windows die with it
        started[0].wait(timeout=10)
        fleet.worker("worker-0-again", per_worker)
    code = submitter.wait(timeout=RUN_TIMEOUT_S)
    wall = time.monotonic() - begin
    fleet.stop()
    return Outcome(fleet.label, code, wall, len(fleet.names), fleet.exactly_once())


SECTION = "Fleet on Celery"
HEADER = ["Run", "Exit", "Wall", "Against the built-in runner", "Targets ending exactly once",
          "Result"]
HOW_TO_READ = (
    "How to read it: every target is a copy of the demo's small shop; its migration counts"
    " itself in `applied_log`, so a window run twice, or two at once, shows. The built-in"
    " runner and two Celery workers (RabbitMQ on loopback, two windows each) run the same"
    " fleet at the same concurrency, each on databases of its own; the third run kills one"
    " worker with its windows (SIGKILL, its whole process tree) once half the targets have"
    " completed, and starts another. A run passes when every target ends exactly once: one"
    " completed window in its journal and one row in its `applied_log`. The machine is shared"
    " (2 cores): the load is recorded above. Reproduce with `BENCH_ONLY=celery"
    " .venv/bin/python -m bench.run` (`BENCH_FLEET` sets the size, `BENCH_CONCURRENCY` the"
    " waves). A miss is reported, not failed.")


def run_all(size: int, concurrency: int) -> list[Outcome]:
    cluster = Cluster()
    outcomes: list[Outcome] = []
    try:
        cluster.init()
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="window-bench-fleet-") as folder:
            root = Path(folder)
            builtin = Fleet(cluster, root, "builtin", size=size, concurrency=concurrency,
                            engine="builtin")
            outcomes.append(timed(builtin, workers=0, per_worker=0, kill_at=None))
            celery = Fleet(cluster, root, "celery", size=size, concurrency=concurrency,
                           engine="celery")
            outcomes.append(timed(celery, workers=2, per_worker=concurrency // 2,
                                  kill_at=None))
            killed = Fleet(cluster, root, "celery_killed", size=size, concurrency=concurrency,
                           engine="celery")
            outcomes.append(timed(killed, workers=2, per_worker=concurrency // 2,
                                  kill_at=size // 2))
    finally:
        cluster.destroy()
    return outcomes


LABELS = {"builtin": "built-in runner", "celery": "Celery, 2 workers",
          "celery_killed": "Celery, a worker killed mid-wave and started again"}


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    floor = outcomes[0].wall_s
    return [[LABELS[o.label], str(o.exit_code), f"{o.wall_s:.1f} s",
             f"{o.wall_s / floor:.2f}x", f"{o.once}/{o.targets}",
             "PASS" if o.exit_code == 0 and o.once == o.targets else "MISS"]
            for o in outcomes]


def benchmark(report_path: Path) -> bool:
    """Run the three fleets, print the table and write BENCHMARKS.md's section; whether
    every target ended exactly once."""
    size = int(os.environ.get("BENCH_FLEET_CELERY", os.environ.get("BENCH_FLEET", "40")))
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "4"))
    load_before = report.load()
    outcomes = run_all(size, concurrency)
    facts = [f"{size} small databases, concurrency {concurrency}; RabbitMQ on loopback",
             f"load average at the start: {load_before}; at the end: "
             + report.load()]
    body = rows(outcomes)
    print(report.text_table(HEADER, body), flush=True)
    report.write_section(report_path, report.dated_section(SECTION, facts, HEADER, body,
                                                           HOW_TO_READ), SECTION)
    return all(row[-1] == "PASS" for row in body)


def main() -> int:
    return 0 if benchmark(report.path()) else 1


if __name__ == "__main__":
    sys.exit(main())
