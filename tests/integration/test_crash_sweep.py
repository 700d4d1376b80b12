"""Crash anywhere: a window killed at each of its crash points (orchestrator/crash.py), then
resumed, or separately aborted, always ends whole.

Every point a window passes is listed in ``crash_points.py``, for the path that completes, the
path that rolls back (a post-check fails), the same with an in-place rollback, and the path
that rolls back while the standby follows production (``[backup] follow``, a role that may
replicate);
``test_the_listed_points_are_the_real_ones`` records a real run of each and fails when the list
goes stale. The sweep then runs one window
per point and per ending command, crashing it there with ``os._exit`` as kill -9 would, and
checks the invariants:

- the final state is terminal;
- production holds either the fully migrated result or the pre-window data, never a mix (rows,
  checksums and the schema);
- the banner is down, unless the window needs attention;
- the migration ran to completion at most once (the migrate command, like Prisma or Flyway,
  applies only what its own table says is pending, and logs each time it applied);
- no process the window started and no session it opened is left, and no scratch database;
- no replication slot, subscription or publication of the window is left.

A handful of points run in ``make test``; every one runs in ``make test-crash`` (marker
``sweep``), which ``.ci/run`` calls too.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.crash import CRASH_EXIT_CODE
from orchestrator.engine.machine import TERMINAL
from orchestrator.postgres.cluster import Cluster
from tests.integration import crash_points
from tests.support.following import left_on_server
from tests.support.processes import pid_alive
from tests.support.shop import Shop

# Applies the migration once, as a migration tool does: its own table says what is done.
MIGRATE = (
    'psql -X -q -v ON_ERROR_STOP=1 -At "$DATABASE_URL" -c "CREATE TABLE IF NOT EXISTS'
    ' applied (name text PRIMARY KEY)" && if [ "$(psql -X -At "$DATABASE_URL" -c "SELECT'
    " count(*) FROM applied WHERE name = 'm1'\")\" = 0 ]; then psql -X -q -v ON_ERROR_STOP=1"
    ' -1 "$DATABASE_URL" -f migration.sql -c "INSERT INTO applied VALUES (\'m1\')"'
    ' && echo "$WINDOW_PHASE $DATABASE_URL" >> applied.log; fi'
)
FAILING_CHECK = """
[[checks]]
name = "never-passes-on-production"
kind = "sql"
query = "SELECT current_database() NOT LIKE 'shop%' OR current_database() LIKE '%staging'"
"""
PATHS = {"completes": crash_points.COMPLETES, "rolls_back": crash_points.ROLLS_BACK,
         "in_place": crash_points.IN_PLACE, "follows": crash_points.FOLLOWS}
FOLLOWER_PASSWORD = "f0llow-pw"  # a throwaway cluster's role


def configure(shop: Shop, path: str) -> None:
    shop.configure(migrate=MIGRATE,
                   checks=demo.DEMO_CHECKS + ("" if path == "completes" else FAILING_CHECK))
    if path == "follows":  # a role that may follow production: the standby follows it
        role = f"{shop.prod_db}_follow"
        shop.cluster.psql(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER"
                          f" REPLICATION PASSWORD '{FOLLOWER_PASSWORD}'")
        shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db, user=role,
                                                    password=FOLLOWER_PASSWORD)
    if path == "in_place":  # for a role that may not create databases: no standby, no swap
        shop.config.write_text(shop.config.read_text().replace(
            "jobs = 2\n", 'jobs = 2\nverify = "list"\nrollback = "in_place"\n', 1))


def recorded(shop: Shop, path: str, tmp_path: Path) -> list[str]:
    configure(shop, path)
    record = tmp_path / f"{path}.points"
    shop.env["WINDOW_CRASH_RECORD"] = str(record)
    done = shop.run_window()
    del shop.env["WINDOW_CRASH_RECORD"]
    assert done.returncode == (0 if path == "completes" else 1), done.stdout + done.stderr
    return record.read_text().split()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_listed_points_are_the_real_ones(shop: Shop, tmp_path: Path, path: str) -> None:
    assert recorded(shop, path, tmp_path) == PATHS[path], (
        f"the crash points of the {path} path changed: update tests/integration/"
        "crash_points.py and RELIABILITY.md")


def cases() -> list[Any]:
    """(path, point, ending) for every point of every path; the rollback paths' points from
    the rollback's start (before it, the completing path's points, or the same ones with
    fewer steps). A few run in `make test`, all under `-m sweep`."""
    made = []
    for path, points in sorted(PATHS.items()):
        start = 0 if path == "completes" else points.index("journal.start_phase.backup#1") \
            if path == "follows" else \
            points.index("journal.start_phase.rollback#1")
        for point in points[start:]:
            for ending in ("resume", "abort"):
                marks = () if (path, point, ending) in crash_points.SAMPLE else (pytest.mark.sweep,)
                made.append(pytest.param(path, point, ending, marks=marks,
                                         id=f"{path}-{point}-{ending}"))
    return made


@pytest.fixture(scope="module")
def migrated(cluster: Cluster) -> tuple[dict[str, Any], str]:
    """What production looks like once migrated: a shop with the migration applied by hand."""
    url = demo.create_shop(cluster, "crash_reference")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(demo.GOOD_MIGRATION)  # type: ignore[arg-type]
            conn.execute("CREATE TABLE applied (name text PRIMARY KEY)")
            conn.execute("INSERT INTO applied VALUES ('m1')")
        return demo.fingerprint(url), _schema(cluster, "crash_reference")
    finally:
        cluster.psql("DROP DATABASE crash_reference WITH (FORCE)")


@pytest.mark.parametrize(("path", "point", "ending"), cases())
def test_a_window_killed_at_a_crash_point_ends_whole(
        shop: Shop, migrated: tuple[dict[str, Any], str], path: str, point: str,
        ending: str) -> None:
    configure(shop, path)
    before = (shop.fingerprint(), _schema(shop.cluster, shop.prod_db))
    shop.env["WINDOW_CRASH_AT"] = point
    crashed = shop.run_window()
    del shop.env["WINDOW_CRASH_AT"]
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stdout + crashed.stderr

    if ending == "resume":
        done = shop.window("resume")
        # A crash after the window's end was journaled leaves nothing to resume.
        assert done.returncode in (0, 1, 2, 3, 4), done.stdout + done.stderr
    else:
        done = shop.window("abort", "--confirm", demo.PHRASE)
        assert done.returncode in (0, 4), done.stdout + done.stderr

    status = shop.status()
    assert status["state"] in TERMINAL, status
    after = (shop.fingerprint(), _schema(shop.cluster, shop.prod_db))
    assert after in (before, migrated), f"production is neither as before nor migrated: {point}"
    if path != "completes" or ending == "abort":
        expected = {"completed": migrated, "rolled_back": before, "aborted": before}
        if status["state"] in expected:
            assert after == expected[status["state"]], status["state"]
    if status["state"] != "needs_attention":
        assert not (shop.folder / "maintenance.on").exists(), "the banner is still up"
    applied = shop.folder / "applied.log"
    production = [line for line in (applied.read_text().splitlines() if applied.exists() else [])
                  if line.startswith("migrate ")]
    assert len(production) <= 1, production
    _assert_nothing_left(shop)


def _assert_nothing_left(shop: Shop) -> None:
    journal = shop.folder / ".window" / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        pids = [row[0] for row in db.execute("SELECT pid FROM children WHERE ended_at IS NULL")]
    assert not [pid for pid in pids if pid_alive(pid)], "a command of the window still runs"
    sessions = shop.cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'window/%'")
    assert sessions == "0", "a session of the window is still open"
    left = shop.databases(f"{shop.prod_db}_window_%") + shop.databases("%_rehearsal_%")
    assert not left, f"scratch databases left: {left}"
    assert left_on_server(shop.cluster, shop.prod_db) == [], "a slot, subscription or" \
        " publication is left"


def _schema(cluster: Cluster, dbname: str) -> str:
    done = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "-h", "127.0.0.1", "-p", str(cluster.port),
         "-U", "postgres", dbname],
        env={**os.environ, "PGPASSWORD": cluster.password}, capture_output=True, text=True,
        check=True)
    return "\n".join(line for line in done.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "--")))
