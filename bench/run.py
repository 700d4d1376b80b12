"""``make bench``: what ``window`` costs, measured on throwaway clusters it removes again.

``BENCH_ONLY`` picks figures (comma-separated; default all of them):

- ``startup`` and ``overhead`` (``bench.fast``, under a minute; ``make bench-fast``):
  ``window --help`` and ``window status`` start-up against ``python -c pass``, and the
  orchestration overhead and added downtime of whole windows whose commands do nothing,
  on a small shop database;
- ``backup``: backup and rollback against raw pg_dump and pg_restore on a large database:

  1. generates a shop database of ``BENCH_GB`` GiB (default 1.0) and a small staging copy;
  2. times raw ``pg_dump -Fd -j2 -Z1`` and ``pg_restore -j2 --exit-on-error`` on it;
  3. runs two real windows that fail on production and roll back, one by swapping in the
     verified standby copy and one by restoring the archive, and reads their audit logs.

- ``wide``, ``wide10k`` (``bench.wide``): the backup phase on 3,000 small tables against raw
  pg_dump and pg_restore, and a whole window on 10,000 tables;
- ``fleet`` (``bench.fleet``): 200 small databases, four at a time, against one window;
- ``celery`` (``bench.celery_fleet``): 40 small databases run by the built-in runner, by two
  Celery workers over RabbitMQ, and again with a worker killed mid-wave.

Each part prints its table and replaces its own section of BENCHMARKS.md (``BENCH_REPORT``
names another file). ``BENCH_KEEP=1`` keeps the windows' project folders (audit logs,
journals, window output) for a look; the clusters are always removed.

Exit 0 when every step ran, misses included; non-zero only when something crashed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import celery_fleet, data, fast, fleet, raw, report, wide, windows
from orchestrator.postgres.cluster import Cluster

PRODUCTION = "shop"
STAGING = "shop_staging"
STAGING_GB = 0.001  # a rehearsal database: the schema and a few thousand rows
FIGURES = ("startup", "overhead", "backup", "wide", "wide10k", "fleet", "celery")


@dataclass
class Database:
    url: str
    size_bytes: int
    generated_s: float
    version: str

    @property
    def major(self) -> int:
        match = re.match(r"\d+", self.version)
        return int(match.group(0)) if match else 0


def chosen_figures() -> set[str]:
    value = os.environ.get("BENCH_ONLY", "").strip()
    chosen = {name.strip() for name in value.split(",") if name.strip()} or set(FIGURES)
    unknown = sorted(chosen - set(FIGURES))
    if unknown:
        sys.exit(f"bench: BENCH_ONLY takes {', '.join(FIGURES)}; not {', '.join(unknown)}")
    return chosen


def bench_gb() -> float:
    value = os.environ.get("BENCH_GB", "1.0")
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = 0.0
    if gigabytes <= 0:
        sys.exit(f"bench: BENCH_GB must be a positive number of GiB, not {value!r}")
    return gigabytes


def build_databases(cluster: Cluster, gigabytes: float) -> tuple[Database, str]:
    """Production of the asked size (timed) and the staging copy; production and staging URL."""
    print(f"Generating a {gigabytes:g} GiB shop database ...", flush=True)
    url = data.create_app_database(cluster, PRODUCTION)
    started = time.monotonic()
    data.generate(url, data.Shape.for_size(gigabytes))
    production = Database(url, data.database_size(url), time.monotonic() - started,
                          data.server_version(url))
    print(f"database {PRODUCTION}: {report.size(production.size_bytes)} (pg_database_size),"
          f" generated in {production.generated_s:.1f} s", flush=True)
    if production.size_bytes < gigabytes * data.GIB:
        print(f"  note: smaller than the {gigabytes:g} GiB asked for", flush=True)
    staging_url = data.create_app_database(cluster, STAGING)
    data.generate(staging_url, data.Shape.for_size(STAGING_GB), progress=False)
    return production, staging_url


def measure_raw(cluster: Cluster, production: Database, workdir: Path) -> raw.RawTimings:
    print("\nTiming the raw tools ...", flush=True)
    timings = raw.measure(cluster, PRODUCTION, workdir, production.major)
    print(f"pg_dump --format=directory --jobs={raw.JOBS} --compress=1: {timings.dump_s:.2f} s"
          f" (median of {raw.DUMP_RUNS}),"
          f" archive {report.size(timings.archive_bytes)}")
    print(f"pg_restore --jobs={raw.JOBS} --exit-on-error into a new database:"
          f" {timings.restore_s:.2f} s", flush=True)
    return timings


def run_window(rollback: str, workdir: Path, env: dict[str, str]) -> windows.WindowResult:
    print(f"\nWindow rolling back by {rollback} ...", flush=True)
    config = windows.write(workdir / f"window-{rollback}", rollback)
    result = windows.run(config, env, rollback)
    print(f"window run exited {result.exit_code} (1 = rolled back) in {result.wall_s:.1f} s;"
          f" audit events: {len(result.events)}", flush=True)
    if result.exit_code != 1:
        print("  unexpected exit; the window's last lines:\n"
              + "\n".join("    " + line for line in result.output_tail.splitlines()))
    return result


def reset_production(cluster: Cluster, url: str) -> None:
    """Between windows: drop what the first left behind (its failed database, any standby
    copy) to free the disk, and vacuum the restored production so both windows dump a
    database in the same shape as the raw pg_dump did."""
    leftovers = cluster.psql("SELECT datname FROM pg_database"
                             f" WHERE datname ~ '^{PRODUCTION}_(failed|window)_'")
    for name in leftovers.split():
        cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    data.vacuum(url)


def machine_facts(gigabytes: float, production: Database, timings: raw.RawTimings,
                  runs: list[windows.WindowResult]) -> list[str]:
    window_archive = runs[0].value("backup_dumped", "size_bytes")
    exits = ", ".join(f"{w.label} window exited {w.exit_code}" for w in runs)
    return [
        f"machine: {os.cpu_count()} cores, {report.size(memory_bytes())} RAM,"
        f" PostgreSQL {production.version}",
        f"database: {report.size(production.size_bytes)} (pg_database_size, BENCH_GB="
        f"{gigabytes:g}), generated in {production.generated_s:.1f} s",
        f"archive: {report.size(timings.archive_bytes)} raw (pg_dump -Fd -j{raw.JOBS} -Z1),"
        f" {report.size(window_archive)} from window's backup",
        f"windows: {exits} (1 = rolled back)",
    ]


def memory_bytes() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def publish(gigabytes: float, production: Database, timings: raw.RawTimings,
            runs: list[windows.WindowResult]) -> None:
    table = report.rows(timings.dump_s, timings.restore_s, *runs)
    facts = machine_facts(gigabytes, production, timings, runs)
    print("\n" + "\n".join(facts) + "\n")
    print(report.text_table(report.HEADER, [r.cells() for r in table]))
    print("\n" + report.text_table(["phase", *(f"{w.label} window" for w in runs)],
                                   report.phase_rows(runs)))
    heading = f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    path = report.path()
    report.write_section(path, report.markdown_section(heading, facts, table, runs))
    print(f"\nwritten to {path}")


def benchmark(cluster: Cluster, workdir: Path, gigabytes: float) -> None:
    production, staging_url = build_databases(cluster, gigabytes)
    timings = measure_raw(cluster, production, workdir)
    env = {**os.environ, "DATABASE_URL": production.url, "DATABASE_URL_STAGING": staging_url,
           "NO_COLOR": "1"}
    swap = run_window("swap", workdir, env)
    reset_production(cluster, production.url)
    restore = run_window("restore", workdir, env)
    publish(gigabytes, production, timings, [swap, restore])


def in_workdir(label: str, part: Callable[[Path], None]) -> None:
    """Run one part in a temporary folder, removed afterwards unless BENCH_KEEP is set."""
    workdir = Path(tempfile.mkdtemp(prefix=f"window-bench-{label}-"))
    try:
        part(workdir)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def backup_part(gigabytes: float, workdir: Path) -> None:
    with data.throwaway_cluster() as cluster:
        benchmark(cluster, workdir, gigabytes)


def main() -> int:
    chosen = chosen_figures()
    gigabytes = bench_gb() if "backup" in chosen else 0.0  # a bad BENCH_GB fails at once
    if chosen & {"startup", "overhead"}:
        in_workdir("fast", lambda workdir: fast.benchmark(chosen, workdir, report.path()))
    if "backup" in chosen:
        in_workdir("backup", lambda workdir: backup_part(gigabytes, workdir))
    for case in (wide.WIDE, wide.WIDE10K):
        if case.selector in chosen:
            in_workdir(case.selector, lambda workdir, c=case: wide.benchmark(
                c, workdir, report.path()))
    if "fleet" in chosen:
        in_workdir("fleet", lambda workdir: fleet.benchmark(workdir, report.path()))
    if "celery" in chosen:
        celery_fleet.benchmark(report.path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
