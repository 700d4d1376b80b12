"""The yardstick: ``pg_dump`` and ``pg_restore`` run by hand, exactly as a DBA would.

The same programs ``window`` picks (``orchestrator.pgtools``), the same options its backup and
rollback use (directory format, two jobs, compression level 1, exit on the first error), and
the password in PGPASSWORD, never in argv.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.commands.demo import APP_PASSWORD, APP_USER
from orchestrator.postgres import tools
from orchestrator.postgres.cluster import Cluster

JOBS = 2
DUMP_RUNS = 3
TOOL_TIMEOUT_S = 3 * 3600


@dataclass(frozen=True)
class RawTimings:
    dump_s: float
    archive_bytes: int
    restore_s: float


def libpq_env(cluster: Cluster, dbname: str) -> dict[str, str]:
    """libpq's variables for the application's role on ``dbname``."""
    return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port),
            "PGUSER": APP_USER, "PGPASSWORD": APP_PASSWORD, "PGDATABASE": dbname}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one program run; a non-zero exit raises with its last lines of stderr."""
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}: {tail}")
    return took


def dump(cluster: Cluster, dbname: str, archive: Path, major: int) -> float:
    argv = [str(tools.find("pg_dump", major)), "--format=directory", f"--jobs={JOBS}",
            "--compress=1", f"--file={archive}"]
    return timed(argv, libpq_env(cluster, dbname))


def restore(cluster: Cluster, archive: Path, into: str, major: int) -> float:
    """Into a new, empty database owned by the application's role, as a rollback would."""
    cluster.psql(f"CREATE DATABASE {into} OWNER {APP_USER} TEMPLATE template0")
    argv = [str(tools.find("pg_restore", major)), f"--jobs={JOBS}", "--exit-on-error",
            f"--dbname={into}", str(archive)]
    return timed(argv, libpq_env(cluster, into))


def measure(cluster: Cluster, dbname: str, workdir: Path, major: int) -> RawTimings:
    """Dump ``dbname``, restore it into a scratch database, then drop both copies again.

    The scratch database and the archive are removed at once, so later windows find the same
    disk and page cache the raw tools found.
    """
    archive = workdir / "raw-dump"
    scratch = f"{dbname}_rawrestore"
    runs = []
    for _ in range(DUMP_RUNS):  # one 1 GB dump varies by 10-15% here: take the median
        shutil.rmtree(archive, ignore_errors=True)
        runs.append(dump(cluster, dbname, archive, major))
    dump_s = statistics.median(runs)
    archive_bytes = folder_bytes(archive)
    try:
        restore_s = restore(cluster, archive, scratch, major)
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {scratch}")
        shutil.rmtree(archive, ignore_errors=True)
    return RawTimings(dump_s=dump_s, archive_bytes=archive_bytes, restore_s=restore_s)
