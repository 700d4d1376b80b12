"""Many tables: the backup phase on a wide schema against the raw tools, in the same run.

``BENCH_ONLY=wide``: a database of ``WIDE_TABLES`` (3,000) small tables, each with a key, an
index and a few rows. Raw ``pg_dump -Fd -j2 -Z1`` (median of three) and raw
``pg_restore -j2`` are timed on it; then one whole window (every command ``true``) runs on
it, and its backup phase (dump, figures, proof restore, comparison) is set against the two
raw programs together: the goal is at most 1.3x.

``BENCH_ONLY=wide10k``: 10,000 such tables; a whole window must complete (the time is kept),
with its backup phase against a single raw dump and restore for scale. A schema that wide
needs more of the server's lock table than its default (pg_dump locks every table it
dumps): the bench cluster runs with ``max_locks_per_transaction = 256``.

Each case prints its table and replaces its own section of BENCHMARKS.md; a miss is
reported, never raised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import data, raw, report, windows
from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster

WIDE_TABLES = 3_000
WIDE10K_TABLES = 10_000
GOAL = 1.3
PER_TRANSACTION = 250  # tables made per transaction: each holds its locks until commit
LOCKS = 256  # max_locks_per_transaction on the bench cluster (64 by default)
HEADER = ["Figure", "Raw tools", "window", "Ratio", "Target", "Result"]
TIMEOUTS = ('preflight = "5m"', 'staging_dry_run = "10m"', 'backup = "60m"',
            'migrate = "10m"', 'post_check = "10m"')


@dataclass(frozen=True)
class Case:
    selector: str
    section: str
    tables: int
    dump_runs: int


WIDE = Case("wide", "Many tables", WIDE_TABLES, raw.DUMP_RUNS)
WIDE10K = Case("wide10k", "10,000 tables", WIDE10K_TABLES, 1)


def create_wide(cluster: Cluster, dbname: str, tables: int) -> str:
    """``tables`` tables of five rows, each with a key and a second index; the URL."""
    url = data.create_app_database(cluster, dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, tables + 1, PER_TRANSACTION):
            last = min(tables, first + PER_TRANSACTION - 1)
            conn.execute(f"""
                DO $$ BEGIN FOR i IN {first}..{last} LOOP
                  EXECUTE format('CREATE TABLE tenant_%s (id bigint PRIMARY KEY,
                                  account int NOT NULL, note text)', i);
                  EXECUTE format('CREATE INDEX ON tenant_%s (account)', i);
                  EXECUTE format('INSERT INTO tenant_%s SELECT g, g %% 3, md5(g::text)
                                  FROM generate_series(1, 5) AS g', i);
                END LOOP; END $$""")
        conn.execute("VACUUM ANALYZE")
    return url


def write_project(folder: Path) -> Path:
    indent = "\n" + " " * 8  # write_project dedents its template after filling it in
    return demo.write_project(folder, "SELECT 1;\n", migrate="true", banner_on="true",
                              banner_off="true", checks="", timeouts=indent.join(TIMEOUTS))


def uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or f"load average {report.load()}"


def measure(case: Case, workdir: Path) -> tuple[list[str], list[list[str]]]:
    """The case's facts and table rows, on a throwaway cluster removed afterwards."""
    facts = [f"load at the start: `{uptime()}`"]
    with data.throwaway_cluster(max_locks_per_transaction=LOCKS) as cluster:
        started = time.monotonic()
        print(f"Creating {case.tables:,} tables ...", flush=True)
        url = create_wide(cluster, "wide", case.tables)
        staging = data.create_app_database(cluster, "wide_staging")
        size = data.database_size(url)
        version = data.server_version(url)
        major = int(version.split(".")[0])
        print(f"  {report.size(size)} in {time.monotonic() - started:.1f} s", flush=True)
        print(f"Timing the raw tools ({case.dump_runs} dump(s), one restore) ...", flush=True)
        dumps = []
        archive = workdir / "raw-dump"
        for _ in range(case.dump_runs):
            subprocess.run(["rm", "-rf", str(archive)], check=True)
            dumps.append(raw.dump(cluster, "wide", archive, major))
        dump_s = sorted(dumps)[len(dumps) // 2]
        try:
            restore_s = raw.restore(cluster, archive, "wide_rawrestore", major)
        finally:
            cluster.psql("DROP DATABASE IF EXISTS wide_rawrestore")
            subprocess.run(["rm", "-rf", str(archive)], check=True)
        print(f"  pg_dump {dump_s:.2f} s, pg_restore {restore_s:.2f} s", flush=True)
        env = {**os.environ, "DATABASE_URL": url, "DATABASE_URL_STAGING": staging,
               "NO_COLOR": "1"}
        print("A whole window ...", flush=True)
        window = windows.run(write_project(workdir / "window"), env, case.selector)
        print(f"  exit {window.exit_code} in {window.wall_s:.1f} s", flush=True)
        if window.exit_code != 0:
            print("  unexpected exit; the window's last lines:\n"
                  + "\n".join("    " + line for line in window.output_tail.splitlines()))
    facts += [f"machine: {os.cpu_count()} cores, PostgreSQL {version}, max_locks_per_transaction"
              f" = {LOCKS}",
              f"database: {case.tables:,} tables (key, index, 5 rows each),"
              f" {report.size(size)} (pg_database_size)",
              f"window: exit {window.exit_code} in {window.wall_s:.1f} s (spawn to exit)",
              f"load at the end: `{uptime()}`"]
    return facts, rows(case, window, dump_s, restore_s)


def rows(case: Case, window: windows.WindowResult, dump_s: float, restore_s: float
         ) -> list[list[str]]:
    backup = window.phases.get("backup")
    dumped = window.duration("backup_dumped")
    restored = window.duration("backup_restored")
    own = (backup - dumped - restored
           if backup is not None and dumped is not None and restored is not None else None)
    completed = "" if window.exit_code == 0 else f"exit {window.exit_code}"
    phase_goal = (report.Row("", dump_s + restore_s, backup, f"<= {GOAL:.1f}x", max_ratio=GOAL)
                  if case is WIDE else report.Row("", dump_s + restore_s, backup, "-"))
    table = [
        ("backup phase (dump, figures, proof restore, comparison) vs pg_dump + pg_restore",
         phase_goal),
        ("pg_dump (backup_dumped)", report.Row("", dump_s, dumped, "-")),
        ("figures alongside the dump (snapshot_described, from the dump's start)",
         report.Row("", None, window.duration("snapshot_described"), "-")),
        ("proof restore (backup_restored)", report.Row("", restore_s, restored, "-")),
        ("comparison, analyzing batch by batch (backup_verified)",
         report.Row("", None, window.duration("backup_verified"), "-")),
        ("backup phase's own seconds (minus its pg_dump and pg_restore)",
         report.Row("", None, own, "-")),
        (f"whole window on {case.tables:,} tables (spawn to exit)",
         report.Row("", None, window.wall_s, "completes", max_seconds=windows.WINDOW_TIMEOUT_S,
                    problem=completed)),
    ]
    return [[label, *row.cells()[1:]] for label, row in table]


HOW_WIDE = (
    "How to read it: the raw tools run on the same database right before the window"
    " (pg_dump -Fd -j2 -Z1 three times, the median kept; pg_restore -j2 --exit-on-error once,"
    " into a new database). The backup phase is `window status --json`'s duration of the"
    " phase: pg_dump of an exported snapshot with the figures (rows and checksums, small tables"
    " 200 to a query, `[backup] jobs` connections each taking one transaction per batch that"
    " imports the snapshot) computed alongside it, the table of contents read whole, the"
    " manifest, the proof restore into the standby copy, and the comparison, which analyzes"
    " each batch as it reads it (the restore itself analyzes nothing). Its own seconds are the"
    " phase minus its pg_dump and pg_restore. The machine is shared (2 cores, other"
    " sessions' tests and benches running): the load is recorded above. Reproduce with"
    " `BENCH_ONLY=wide .venv/bin/python -m bench.run`. A miss is reported, not failed.")
HOW_WIDE10K = (
    "How to read it: one whole window (every command `true`) on 10,000 tables must complete;"
    " the raw tools (one pg_dump -Fd -j2 -Z1, one pg_restore -j2) give the scale. pg_dump"
    " holds a lock on every table it dumps, so a schema this wide needs"
    " `max_locks_per_transaction` above its default of 64 (with 100 connections the lock"
    " table holds about 6,400 locks): without it pg_dump fails with \"out of shared memory\","
    " which the backup explains with the value to set. Reproduce with"
    " `BENCH_ONLY=wide10k .venv/bin/python -m bench.run`.")


def benchmark(case: Case, workdir: Path, path: Path) -> None:
    facts, body = measure(case, workdir)
    print("\n" + "\n".join(facts) + "\n")
    print(report.text_table(HEADER, body))
    how = HOW_WIDE if case is WIDE else HOW_WIDE10K
    report.write_section(path, report.dated_section(case.section, facts, HEADER, body, how),
                         case.section)
    print(f"\nwritten to {path}", flush=True)


if __name__ == "__main__":  # pragma: no cover - run through bench.run
    sys.exit("run through bench.run: BENCH_ONLY=wide or wide10k")
