"""The window end to end: real PostgreSQL, real pg_dump / pg_restore / psql, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from orchestrator.commands import demo
from tests.support.processes import pid_alive
from tests.support.sessions import backup_waiting
from tests.support.shop import SLOW_ON_PRODUCTION, Shop, add_free_sample
from tests.support.waiting import wait_until


def test_happy_path_migrates_staging_then_production(shop: Shop) -> None:
    done = shop.window("run", input=f"{demo.PHRASE}\n")

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.has_column("orders", "status")
    assert shop.has_column("orders", "status", shop.staging_url)
    assert shop.banner_log() == ["on", "off"]
    assert not (shop.folder / "maintenance.on").exists()
    status = shop.status()
    assert status["state"] == "completed"
    assert [p["status"] for p in status["phases"]] == ["succeeded"] * 7 + ["skipped"] * 2
    assert all(p["timeout_s"] for p in status["phases"][:7])
    archive = Path(status["backup"]["path"])
    assert (archive / "toc.dat").is_file()
    tables = status["backup"]["tables"]
    assert {t: v["rows"] for t, v in tables.items()} == {
        "public.order_items": 6000, "public.orders": 2000, "public.products": 200}
    assert status["backup"]["verified"] is True
    assert status["backup"]["size_bytes"] > 0
    assert shop.fingerprint() != tables, "migrated since the backup"
    assert shop.databases(f"{shop.prod_db}_window_%") == [], "the standby is dropped"


def test_migration_failing_on_staging_never_touches_production(shop: Shop) -> None:
    add_free_sample(shop.staging_url)
    shop.configure(demo.BAD_MIGRATION)
    before, schema = shop.fingerprint(), shop.schema()

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == []
    status = shop.status()
    assert status["state"] == "aborted"
    assert shop.phase("staging_dry_run")["status"] == "failed"
    assert shop.phase("backup")["status"] == "skipped"


DATABASE_PROPERTIES = (
    "SELECT (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c"
    "        WHERE s.setdatabase = d.oid), datacl::text[] FROM pg_database d"
    " WHERE datname = current_database()"
)


def test_half_applied_migration_is_rolled_back_and_evidence_kept(shop: Shop) -> None:
    add_free_sample(shop.prod_url)
    # What a restore without --create forgets, and table shapes that trip naive checks.
    shop.cluster.psql(
        f"ALTER DATABASE {shop.prod_db} SET search_path = public, \"$user\";"
        f" ALTER DATABASE {shop.prod_db} SET statement_timeout = '42s';"
        f" ALTER DATABASE {shop.prod_db} SET work_mem = '8MB';"
        f" REVOKE ALL ON DATABASE {shop.prod_db} FROM PUBLIC;"
        f" GRANT CONNECT ON DATABASE {shop.prod_db} TO pg_monitor")
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);'
                     " CREATE TABLE events_2026 PARTITION OF events"
                     " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
                     " INSERT INTO events SELECT i, '2026-03-01' FROM generate_series(1, 50) i;"
                     ' CREATE TABLE "audit log" (line text, payload json);'  # json: no hash
                     """ INSERT INTO "audit log" VALUES ('a b', '{"x": 1}'), ('c', null);""")
        properties = conn.execute(DATABASE_PROPERTIES).fetchone()
    shop.configure(demo.BAD_MIGRATION)
    before, schema = shop.fingerprint(), shop.schema()

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == ["on", "off"]
    assert shop.status()["state"] == "rolled_back"
    retained = shop.databases(f"{shop.prod_db}_failed_%")
    assert len(retained) == 1
    assert shop.sql("SELECT to_regclass('coupons') IS NOT NULL",
                    shop.cluster.url(retained[0])) is True
    assert shop.databases(f"{shop.prod_db}_window_%") == []
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        assert conn.execute(DATABASE_PROPERTIES).fetchone() == properties
    tables = shop.status()["backup"]["tables"]
    assert tables["public.events_2026"]["rows"] == 50
    assert tables['public."audit log"']["rows"] == 2
    assert shop.status()["rollback"]["method"] == "swap"


def test_failing_post_check_rolls_back(shop: Shop) -> None:
    add_free_sample(shop.prod_url)
    shop.configure(checks='''
[[checks]]
name = "no-free-products"
kind = "sql"
query = "SELECT NOT EXISTS (SELECT 1 FROM products WHERE price_cents = 0)"
''')
    before, schema = shop.fingerprint(), shop.schema()

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == ["on", "off"]
    assert shop.phase("post_check")["status"] == "failed"
    assert "no-free-products" in shop.phase("post_check")["error"]
    assert shop.status()["state"] == "rolled_back"


def test_migrate_past_its_timeout_is_killed_with_its_group(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION, timeouts='migrate = "2s"')
    before = shop.fingerprint()
    started = time.monotonic()

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert not pid_alive(int((shop.folder / "sleeper.pid").read_text()))
    assert shop.phase("migrate")["status"] == "timed_out"
    assert shop.fingerprint() == before
    assert shop.banner_log() == ["on", "off"]


def test_kill_9_during_migrate_then_resume_completes(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    window, sleeper = shop.start_until_sleeping()

    window.send_signal(signal.SIGKILL)
    window.wait(timeout=10)

    status = shop.status()
    assert status["interrupted"] is True
    assert status["state"] == "migrate"
    assert shop.phase("migrate")["status"] == "interrupted"
    assert pid_alive(sleeper), "the orphaned migrate command should still be running"

    resumed = shop.window("resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not pid_alive(sleeper)
    assert "orphan_stopped" in resumed.stderr
    assert shop.status()["state"] == "completed"
    assert shop.banner_log() == ["on", "off"]
    assert shop.has_column("orders", "status")


def test_sigint_during_backup_exits_5_and_resume_completes(shop: Shop) -> None:
    with backup_waiting(shop) as window:  # its pg_dump blocked on a lock the test holds
        window.send_signal(signal.SIGINT)
        assert window.wait(timeout=30) == 5, shop.background_output()

    status = shop.status()
    assert status["state"] == "backup"
    assert status["interrupted"] is True
    assert shop.phase("backup")["status"] == "interrupted"
    assert shop.banner_log() == []

    resumed = shop.window("resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert shop.status()["state"] == "completed"
    assert shop.banner_log() == ["on", "off"]


def test_abort_from_a_second_terminal_rolls_back(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    before, schema = shop.fingerprint(), shop.schema()
    window, sleeper = shop.start_until_sleeping()

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert window.wait(timeout=30) == 1, shop.background_output()
    assert not pid_alive(sleeper)
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == ["on", "off"]
    assert shop.status()["state"] == "rolled_back"


def test_abort_with_no_live_process_rolls_back_itself(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    before = shop.fingerprint()
    window, sleeper = shop.start_until_sleeping()
    window.send_signal(signal.SIGKILL)
    window.wait(timeout=10)

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert not pid_alive(sleeper)
    assert shop.fingerprint() == before
    assert shop.status()["state"] == "rolled_back"
    assert shop.banner_log() == ["on", "off"]


def test_demo_runs_two_windows_and_cleans_up() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "demo"], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                               + os.environ["PATH"]})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "equals production before it: yes" in done.stdout
    assert "window 1 exited 0" in done.stdout
    assert "window 2 exited 1" in done.stdout
    started = re.search(r"Working in (\S+); starting a throwaway PostgreSQL in (\S+) ",
                        done.stdout)
    assert started, done.stdout
    for folder in started.groups():
        assert not Path(folder).exists(), f"the demo left {folder} behind"


def test_writes_behind_the_banner_are_said_after_a_rollback(shop: Shop) -> None:
    """A writer the banner does not hold off (a cron job, a webhook) inserts while the
    migration runs; the migration then fails. Production is given back without those rows,
    and the rollback says which table took them and that they are in the kept database."""
    shop.configure(migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && if [ "$WINDOW_PHASE"'
        ' = migrate ]; then touch migrating; until [ -e written ]; do sleep 0.1; done;'
        ' exit 1; fi'))
    products = shop.sql("SELECT count(*) FROM products")
    window = shop.start("run", "--confirm", demo.PHRASE)
    wait_until((shop.folder / "migrating").exists, "the migration running", seconds=60)
    shop.sql("INSERT INTO products (name, price_cents) SELECT 'late ' || i, 500"
             " FROM generate_series(1, 7) i RETURNING 1")
    (shop.folder / "written").touch()

    assert window.wait(timeout=60) == 1
    rollback = shop.status()["rollback"]
    assert rollback["written_behind_banner"]["public.products"] == 7
    assert shop.sql("SELECT count(*) FROM products") == products, "given back without them"
    kept = shop.prod_url.rsplit("/", 1)[0] + "/" + rollback["retained_database"]
    assert shop.sql("SELECT count(*) FROM products WHERE name LIKE 'late %'", kept) == 7
    shown = shop.window("status").stdout
    assert "written behind the banner, the failed migration's own included (in the kept" \
        " database, not in production): " in shown and "public.products ~7" in shown
