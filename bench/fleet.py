"""A fleet: the same window on ``FLEET_SIZE`` (200) small databases, ``CONCURRENCY`` (4) at a time.

``BENCH_ONLY=fleet``: on a throwaway cluster, ``FLEET_SIZE`` copies of the demo's small shop
(made from one template) and a shared staging database; every command of the window is
``true``. Measured in the same run:

1. one lone ``window run`` on another copy: the floor for one target;
2. ``window fleet run`` of a small fleet (``SMALL_FLEET``, 20 targets), then of the whole
   fleet, each in its own project folder: the total against one window's time x size /
   concurrency, and against size / min(concurrency, cores) (goal at most 1.3x: a do-nothing
   window keeps a core busy), and the per-target overhead (total x concurrency / size,
   minus one window);
3. after each, the fleet's record (``fleet.json``) and ``window fleet status --json`` (median
   of three): neither may grow faster than the fleet, from 20 targets to 200.

Printed, and written to BENCHMARKS.md under "Fleet"; a miss is reported, never raised.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import data, report
from bench.wide import uptime
from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster

SECTION = "Fleet"
FLEET_SIZE = int(os.environ.get("BENCH_FLEET", "200"))
SMALL_FLEET = max(1, FLEET_SIZE // 10)
CONCURRENCY = 4
GOAL = 1.3
GROWTH_SLACK = 1.1  # per target, the big fleet may cost this much more than the small one
STATUS_RUNS = 3
FLEET_TIMEOUT_S = 3 * 3600
HEADER = ["Figure", "Floor", "window", "Ratio", "Target", "Result"]


@dataclass(frozen=True)
class FleetRun:
    size: int
    exit_code: int
    wall_s: float
    record_bytes: int
    status_s: float


def names(count: int) -> list[str]:
    return [f"t{n:03d}" for n in range(1, count + 1)]


def make_databases(cluster: Cluster, count: int) -> dict[str, str]:
    """``count`` copies of the small shop, plus a lone one and staging: their variables."""
    template = demo.create_shop(cluster, "fleet_template")
    env = {"DATABASE_URL_STAGING": demo.create_shop(cluster, "fleet_staging")}
    for name in [*names(count), "lone"]:
        cluster.psql(f"CREATE DATABASE fleet_{name} TEMPLATE fleet_template"
                     f" OWNER {demo.APP_USER}")
        env[f"{name.upper()}_URL"] = template.rsplit("/", 1)[0] + f"/fleet_{name}"
    return env


def write_project(folder: Path, targets: list[str]) -> Path:
    """A project whose every command is ``true``; its fleet.toml. The rehearsal is skipped
    (``[staging] skip``, ``--skip-staging``), for the fleet and the lone window alike: four
    targets at once would otherwise rehearse on the one staging database."""
    config = demo.write_project(folder, "SELECT 1;\n", migrate="true", banner_on="true",
                                banner_off="true", checks="")
    anchor = 'url_env = "DATABASE_URL_STAGING"'
    config.write_text(config.read_text().replace(anchor, f"{anchor}\nskip = true"))
    entries = "".join(f'\n[[targets]]\nname = "{n}"\nurl_env = "{n.upper()}_URL"\n'
                      for n in targets)
    fleet = folder / "fleet.toml"
    fleet.write_text(f'config = "window.toml"\nconcurrency = {CONCURRENCY}\n{entries}')
    return fleet


def window(*args: str, cwd: Path, env: dict[str, str], log: Path | None = None
           ) -> tuple[int, float]:
    """``window ...`` to its end: its exit code and wall seconds."""
    started = time.monotonic()
    with (log or Path(os.devnull)).open("w") as out:
        done = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=FLEET_TIMEOUT_S, check=False)
    return done.returncode, time.monotonic() - started


def lone_window(workdir: Path, env: dict[str, str]) -> tuple[int, float]:
    folder = workdir / "lone"
    config = write_project(folder, []).with_name("window.toml")
    return window("run", "--config", str(config), "--confirm", demo.PHRASE, "--skip-staging",
                  cwd=folder,
                  env={**env, "DATABASE_URL": env["LONE_URL"]}, log=folder / "window.log")


def fleet_run(workdir: Path, env: dict[str, str], size: int) -> FleetRun:
    folder = workdir / f"fleet-{size}"
    write_project(folder, names(size))
    code, wall = window("fleet", "run", "fleet.toml", "--confirm", demo.PHRASE,
                        "--skip-staging", cwd=folder, env=env, log=folder / "fleet.log")
    if code != 0:
        tail = (folder / "fleet.log").read_text().splitlines()[-15:]
        print("  unexpected exit; the fleet's last lines:\n"
              + "\n".join("    " + line for line in tail))
    records = list(folder.rglob("fleet.json"))
    record = sum(r.stat().st_size for r in records)
    status = statistics.median(
        window("fleet", "status", "fleet.toml", "--json", cwd=folder, env=env)[1]
        for _ in range(STATUS_RUNS))
    return FleetRun(size, code, wall, record, status)


def row(figure: str, floor: float | None, value: float | None, target: str, *,
        ok: bool | None = None, unit: str = "s") -> list[str]:
    def shown(x: float | None) -> str:
        if x is None:
            return "-"
        return f"{x:.2f} s" if unit == "s" else f"{x:,.0f} {unit}"

    ratio = f"{value / floor:.2f}x" if floor and value is not None else "-"
    verdict = "info" if ok is None else ("PASS" if ok else "MISS")
    return [figure, shown(floor), shown(value), ratio, target, verdict]


def rows(lone_s: float, small: FleetRun, whole: FleetRun) -> list[list[str]]:
    ideal = lone_s * whole.size / CONCURRENCY
    # A do-nothing window keeps a core busy (start-up, its backup's programs, the server), so
    # no more than one per core runs at full speed: the floor the machine allows.
    parallel = min(CONCURRENCY, os.cpu_count() or 1)
    possible = lone_s * whole.size / parallel
    per_target = whole.wall_s * CONCURRENCY / whole.size - lone_s
    growth = whole.size / small.size
    small_record = small.record_bytes / small.size
    whole_record = whole.record_bytes / whole.size
    return [
        row("one lone window (spawn to exit)", None, lone_s, "-"),
        row(f"fleet of {whole.size}, concurrency {CONCURRENCY}: total vs one window x"
            f" {whole.size}/{CONCURRENCY}", ideal, whole.wall_s, "-"),
        row(f"fleet of {whole.size}: total vs one window x {whole.size}/{parallel}"
            f" (concurrency, at most one per core)", possible, whole.wall_s,
            f"<= {GOAL:.1f}x", ok=whole.exit_code == 0 and whole.wall_s <= possible * GOAL),
        row("per-target overhead (total x concurrency / size, minus one window)", None,
            per_target, "-"),
        row(f"fleet of {small.size}: total vs one window x {small.size}/{CONCURRENCY}",
            lone_s * small.size / CONCURRENCY, small.wall_s, "-"),
        row(f"fleet record (fleet.json) per target, {small.size} -> {whole.size} targets",
            small_record, whole_record, f"<= {GROWTH_SLACK:.1f}x", unit="bytes",
            ok=bool(small_record) and whole_record <= small_record * GROWTH_SLACK),
        row(f"`fleet status --json`, {small.size} -> {whole.size} targets"
            f" (the fleet {growth:.0f}x)", small.status_s, whole.status_s,
            f"<= {growth:.0f}x", ok=whole.status_s <= small.status_s * growth),
    ]


HOW_TO_READ = (
    "How to read it: every target is a copy of the demo's small shop and every command of the"
    ' window is `true`, so each window is almost all orchestration (start-up, gates, the '
    "backup's dump, proof restore and comparison); the rehearsal is skipped (`--skip-"
    'staging`) for the fleet and the lone window alike, since four targets at once cannot '
    'rehearse on one staging database. The floor for the fleet is one lone window on another '
    'copy, measured in the same run, times size / concurrency: a fleet runs the canary alone '
    'first, and each wave of four waits for its slowest window before the next starts. A '
    "do-nothing window keeps a core busy, so on a machine with fewer cores than the "
    "concurrency the goal (at most 1.3x) is judged against size / cores, the most the "
    "machine allows; the ratio to size / concurrency is shown beside it. The "
    'record and `fleet status` are measured after a fleet of a tenth the size and after the '
    'whole fleet; per target, neither may cost more at 200 than at 20. The machine is shared '
    '(2 cores; four windows at once on two cores contend with each other and with other '
    'sessions): the load is recorded above. Reproduce with `BENCH_ONLY=fleet .venv/bin/python'
    ' -m bench.run` (`BENCH_FLEET` sets the size). A miss is reported, not failed.')


def benchmark(workdir: Path, path: Path) -> None:
    facts = [f"load at the start: `{uptime()}`"]
    with data.throwaway_cluster() as cluster:
        print(f"{FLEET_SIZE + 1} small shops from a template ...", flush=True)
        env = {**os.environ, **make_databases(cluster, FLEET_SIZE), "NO_COLOR": "1"}
        env.pop("DATABASE_URL", None)
        version = data.server_version(env["LONE_URL"])
        code, lone_s = lone_window(workdir, env)
        print(f"one lone window: exit {code} in {lone_s:.2f} s", flush=True)
        runs = []
        for size in (SMALL_FLEET, FLEET_SIZE):
            print(f"fleet of {size} ...", flush=True)
            done = fleet_run(workdir, env, size)
            print(f"  exit {done.exit_code} in {done.wall_s:.1f} s; fleet.json"
                  f" {done.record_bytes} bytes; fleet status {done.status_s:.2f} s", flush=True)
            runs.append(done)
    facts += [f"machine: {os.cpu_count()} cores, PostgreSQL {version}",
              f"targets: {FLEET_SIZE} copies of the demo's small shop, concurrency"
              f" {CONCURRENCY}; lone window exit {code}; fleet exits "
              + ", ".join(f"{r.size} targets: {r.exit_code}" for r in runs),
              f"load at the end: `{uptime()}`"]
    body = rows(lone_s, runs[0], runs[1])
    print("\n" + "\n".join(facts) + "\n")
    print(report.text_table(HEADER, body))
    report.write_section(path, report.dated_section(SECTION, facts, HEADER, body, HOW_TO_READ),
                         SECTION)
    print(f"\nwritten to {path}", flush=True)
