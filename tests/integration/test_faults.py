"""Faults (issue 8): the server, the disk and S3 failing under a window, and impatient signals.

Each fault must end in a documented state and exit code with nothing lost: production holds
either its pre-window data or the fully migrated result (rows, checksums and schema), the
banner is down unless the window needs attention, and the retained and standby databases are
what the README says. The server is this worker's own cluster, stopped and started for real;
it is always started again (``outage`` and the ``server`` fixture), since the worker's next
test needs it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster, free_port
from tests.integration.moto import reset
from tests.support.processes import pid_alive
from tests.support.sessions import backup_waiting, sessions
from tests.support.shop import SLOW_ON_PRODUCTION, Shop, add_free_sample
from tests.support.waiting import wait_until

# The migration, then (on production, once) a statement that sleeps on the server.
SLEEPS_IN_SQL = (
    'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
    'if [ "$WINDOW_PHASE" = migrate ] && [ ! -f attempted ]; then touch attempted; '
    'psql -X -q -v ON_ERROR_STOP=1 -c "SELECT pg_sleep(120)" "$DATABASE_URL"; fi'
)
# The migration, then (on production) client-side work until the test says go (60 s at most).
WAITS_FOR_GO = (
    'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
    'if [ "$WINDOW_PHASE" = migrate ]; then touch waiting; i=0; '
    "while [ ! -f go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; [ -f go ]; fi"
)
BIG = 300_000  # rows: a restore that takes a second or two, a dump of about 12 MB
FILE_SIZE_LIMIT = 4 * 1024 * 1024
BUCKET = "shop-backups"


def running(cluster: Cluster) -> bool:
    return (cluster.data / "postmaster.pid").exists()


def start_again(cluster: Cluster) -> None:
    if not running(cluster):
        cluster.start()
    cluster.wait_ready()


@pytest.fixture
def server(cluster: Cluster) -> Iterator[Cluster]:
    """The worker's cluster, running again after the test whatever happened in it."""
    try:
        yield cluster
    finally:
        start_again(cluster)


@contextmanager
def outage(cluster: Cluster, mode: str = "fast", seconds: float = 0.0) -> Iterator[None]:
    """The server stops (``fast``: sessions ended, clean; ``immediate``: as a crash), stays
    down ``seconds`` plus whatever the block does, and is started again."""
    try:
        cluster.stop(mode)
        assert not running(cluster), "the server did not stop"
        time.sleep(seconds)
        yield
    finally:
        start_again(cluster)


def grow(url: str, rows: int = BIG) -> None:
    """A table big enough that dumping and restoring it take a moment."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings (id bigint PRIMARY KEY, payload text NOT NULL)")
        conn.execute("INSERT INTO readings SELECT i, md5(i::text) || md5((-i)::text)"
                     " FROM generate_series(1, %s) i", (rows,))


def backup_option(shop: Shop, line: str) -> None:
    shop.config.write_text(shop.config.read_text().replace("jobs = 2\n", f"jobs = 2\n{line}\n"))


def rolling_back_from_the_archive(shop: Shop) -> None:
    """A big production whose migration fails half-way, and no standby copy: the rollback
    must pg_restore the archive."""
    grow(shop.prod_url)
    add_free_sample(shop.prod_url)
    shop.configure(demo.BAD_MIGRATION)
    backup_option(shop, 'verify = "list"')


def events(shop: Shop, name: str, **fields: str) -> list[dict[str, Any]]:
    """The audit log's events called ``name`` whose fields have these values."""
    lines = (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == name
            and all(event.get(k) == v for k, v in fields.items())]


def no_traceback(*outputs: str) -> None:
    for text in outputs:
        assert "Traceback" not in text, text


def assert_untouched(shop: Shop, before: dict[str, Any], schema: str) -> None:
    """Production as before the window; no banner ever raised; no copy left behind."""
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == []
    assert shop.databases(f"{shop.prod_db}\\_window\\_%") == []
    assert shop.databases(f"{shop.prod_db}\\_failed\\_%") == []


def assert_migrated(shop: Shop) -> None:
    """Production holds the fully migrated result: what the rehearsal made of staging (the
    two started as the same shop), the banner is down, the standby copy dropped."""
    assert shop.fingerprint() == shop.fingerprint(shop.staging_url)
    assert shop.schema() == shop.schema(shop.staging_db)
    assert shop.has_column("orders", "status")
    assert shop.banner_log() == ["on", "off"]
    assert not (shop.folder / "maintenance.on").exists()
    assert shop.databases(f"{shop.prod_db}\\_window\\_%") == []


def assert_rolled_back(shop: Shop, before: dict[str, Any], schema: str) -> None:
    """Production holds the backup again, the banner is down, the failed database is kept
    (with the migration's table in it) and no copy is left."""
    assert shop.status()["state"] == "rolled_back"
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert shop.banner_log() == ["on", "off"]
    assert not (shop.folder / "maintenance.on").exists()
    retained = shop.databases(f"{shop.prod_db}\\_failed\\_%")
    assert len(retained) == 1
    assert shop.status()["rollback"]["retained_database"] == retained[0]
    assert shop.databases(f"{shop.prod_db}\\_window\\_%") == []


def nothing_to_resume(shop: Shop) -> None:
    """What the engineer tries first after any ending: resume says there is nothing to do."""
    resumed = shop.window("resume")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert "nothing to resume" in resumed.stderr
    no_traceback(resumed.stdout, resumed.stderr)


def test_server_stopped_during_the_backup_stops_the_window_and_a_new_run_completes(
        server: Cluster, shop: Shop) -> None:
    before, schema = shop.fingerprint(), shop.schema()
    with backup_waiting(shop) as window, outage(server, seconds=1):
        pass

    assert window.wait(timeout=120) == 3, shop.background_output()
    output = shop.background_output()
    no_traceback(output)
    status = shop.status()
    assert status["state"] == "aborted"
    backup = shop.phase("backup")
    assert backup["status"] == "failed"
    assert backup["error"].startswith("pg_dump exited 1:"), backup["error"]
    assert_untouched(shop, before, schema)

    nothing_to_resume(shop)
    again = shop.run_window()  # the server is back: the engineer runs the window again

    assert again.returncode == 0, again.stdout + again.stderr
    assert shop.status()["state"] == "completed"
    assert_migrated(shop)


def test_server_crashing_during_migrate_rolls_back_once_it_is_back(
        server: Cluster, shop: Shop) -> None:
    shop.configure(migrate=SLEEPS_IN_SQL)
    before, schema = shop.fingerprint(), shop.schema()
    window = shop.start("run", "--confirm", demo.PHRASE)
    wait_until(lambda: (shop.folder / "attempted").exists() and sessions(server, "migrate"),
               "the migration sleeping on production")

    with outage(server, "immediate", seconds=2):
        # The migration's session died with the server: the window is rolling back, and
        # waits for the server rather than giving up.
        assert window.poll() is None, shop.background_output()

    assert window.wait(timeout=120) == 1, shop.background_output()
    no_traceback(shop.background_output())
    assert shop.phase("migrate")["status"] == "failed"
    assert shop.status()["rollback"]["method"] == "swap"
    assert_rolled_back(shop, before, schema)
    retained = shop.databases(f"{shop.prod_db}\\_failed\\_%")[0]
    assert shop.has_column("orders", "status", shop.cluster.url(retained)), "the evidence"
    nothing_to_resume(shop)


def other_checkout(shop: Shop) -> Path:
    """The same project on a second laptop: its own state folder, the same target."""
    other = shop.folder.parent / "laptop-b"
    shutil.copytree(shop.folder, other, ignore=shutil.ignore_patterns(
        ".window", "backups", "banner.log", "maintenance.on", "waiting", "go"))
    return other


def target_locked(cluster: Cluster, dbname: str) -> bool:
    """Whether a window holds the target's advisory lock (orchestrator.lock.TargetLock)."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = hashtext(%s)::bigint",
            (f"window:{dbname}",)).fetchone()
    return bool(row and row[0])


def wait_for_lock(cluster: Cluster, dbname: str, seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while not target_locked(cluster, dbname):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_server_restarted_under_a_migration_keeps_the_target_locked(
        server: Cluster, shop: Shop) -> None:
    shop.configure(migrate=WAITS_FOR_GO)
    window = shop.start("run", "--confirm", demo.PHRASE)
    shop.wait_for("waiting")  # migrated; the command still runs, off the server
    assert target_locked(server, shop.prod_db)

    with outage(server):
        pass
    # The restart ended the session that held the target's advisory lock: the window must
    # take it again, or a second window can start on a production being migrated.
    retaken = wait_for_lock(server, shop.prod_db)
    # Another engineer, from another checkout, while the first window still migrates.
    second = subprocess.run([sys.executable, "-m", "orchestrator", "rehearse"],
                            cwd=other_checkout(shop), env=shop.env, text=True,
                            capture_output=True, timeout=120, check=False)
    (shop.folder / "go").touch()

    assert window.wait(timeout=120) == 0, shop.background_output()
    no_traceback(shop.background_output())
    assert shop.status()["state"] == "completed"
    assert_migrated(shop)
    assert retaken, "the window never took the target's lock again after the restart"
    assert second.returncode == 6, (
        f"a second window ran against the target while the first held it (exit"
        f" {second.returncode}):\n{second.stdout[-2000:]}{second.stderr[-2000:]}")
    assert "another window holds" in second.stderr


def test_server_stopped_during_the_rollback_restore_starts_it_over_once_it_is_back(
        server: Cluster, shop: Shop) -> None:
    rolling_back_from_the_archive(shop)
    before, schema = shop.fingerprint(), shop.schema()
    window = shop.start("run", "--confirm", demo.PHRASE)
    wait_until(lambda: sessions(server, "rollback"), "pg_restore running", seconds=90)

    with outage(server, seconds=2):
        pass

    code = window.wait(timeout=120)
    output = shop.background_output()
    no_traceback(output)
    # The rollback had minutes left and the server was back within seconds: it must start
    # the restore over (as after an interruption), not leave production half-migrated
    # behind the banner for a person to restore by hand.
    assert code == 1, f"exit {code}; rollback: {shop.phase('rollback')['error']}\n{output}"
    restores = events(shop, "command_started", command="pg_restore", phase="rollback")
    assert len(restores) >= 2, "the outage did not cut the restore short: a bigger table?"
    assert shop.status()["rollback"]["method"] == "restore"
    assert_rolled_back(shop, before, schema)
    nothing_to_resume(shop)


def test_backup_past_the_file_size_limit_stops_before_the_banner(shop: Shop) -> None:
    grow(shop.prod_url)  # its data file alone is three times the limit
    before, schema = shop.fingerprint(), shop.schema()

    def limit_file_size() -> None:  # as a full disk would stop pg_dump part-way
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    log = shop.folder.parent / "limited.log"
    with log.open("w") as out:
        window = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--confirm", demo.PHRASE],
            cwd=shop.folder, env=shop.env, text=True, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_file_size)  # noqa: PLW1509 - setrlimit alone, before exec
        shop.started.append(window)
        code = window.wait(timeout=120)

    output = log.read_text()
    assert code == 3, output
    no_traceback(output)
    assert shop.status()["state"] == "aborted"
    backup = shop.phase("backup")
    assert backup["status"] == "failed"
    assert_untouched(shop, before, schema)
    # "pg_dump exited 1: a worker process died unexpectedly" leaves the engineer guessing:
    # the sentence must say what stopped it.
    assert "file size limit" in backup["error"], backup["error"]


class Moto:
    """A private moto server (S3 on loopback) this test may stop: the session's is shared."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Moto:
        self.url = f"http://127.0.0.1:{free_port()}"
        with (self.folder / "moto.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                 self.url.rsplit(":", 1)[1]],
                cwd=self.folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._answers, "moto's server answering", seconds=30)
        return self

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "moto exited"
        try:
            reset(self.url)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1"}

    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    private = Moto(tmp_path).start()
    try:
        yield private
    finally:
        private.stop()


def test_s3_endpoint_stopped_before_the_upload_stops_before_the_banner(
        shop: Shop, moto: Moto) -> None:
    shop.env.update(moto.env())
    moto.s3().create_bucket(Bucket=BUCKET)
    backup_option(shop, f's3_uri = "s3://{BUCKET}/shop"')
    before, schema = shop.fingerprint(), shop.schema()
    with backup_waiting(shop) as window:
        moto.stop()  # the dump, its proof and then the upload go on without S3

    assert window.wait(timeout=120) == 3, shop.background_output()
    no_traceback(shop.background_output())
    assert shop.status()["state"] == "aborted"
    backup = shop.phase("backup")
    assert backup["error"].startswith(f"uploading {shop.folder / 'backups'}"), backup["error"]
    assert "Could not connect to the endpoint URL" in backup["error"]
    kept = shop.status()["backup"]
    assert kept["s3_uri"] is None
    assert Path(kept["path"], "toc.dat").is_file(), "the local archive is kept"
    assert_untouched(shop, before, schema)

    moto.start()  # S3 is back: the engineer runs the window again
    shop.env.update(moto.env())
    moto.s3().create_bucket(Bucket=BUCKET)
    again = shop.run_window()

    assert again.returncode == 0, again.stdout + again.stderr
    run_id = shop.status()["run_id"]
    assert shop.status()["backup"]["s3_uri"] == f"s3://{BUCKET}/shop/{run_id}"
    keys = {o["Key"] for o in moto.s3().list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"shop/{run_id}.sha256" in keys
    assert_migrated(shop)


@pytest.mark.parametrize("gap", [0.0, 0.3])
def test_sigint_twice_during_migrate_exits_5_and_resume_completes(
        shop: Shop, gap: float) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    window, sleeper = shop.start_until_sleeping()

    window.send_signal(signal.SIGINT)
    time.sleep(gap)
    window.send_signal(signal.SIGINT)

    assert window.wait(timeout=60) == 5, shop.background_output()
    output = shop.background_output()
    no_traceback(output)
    assert "driven by pid" not in output, "said as the process exits: nothing drives it"
    assert ("window: interrupted by SIGINT; the maintenance banner is up. `window resume`"
            " continues the window; `window abort` stops it") in output
    assert not pid_alive(sleeper)
    status = shop.status()
    assert status["state"] == "migrate"
    assert status["interrupted"] is True
    assert shop.phase("migrate")["status"] == "interrupted"
    assert shop.banner_log() == ["on"], "the banner stays up while the window is interrupted"

    resumed = shop.window("resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    no_traceback(resumed.stdout, resumed.stderr)
    assert shop.status()["state"] == "completed"
    assert_migrated(shop)


def test_sigterm_during_the_rollback_restore_exits_5_and_resume_finishes_it(
        cluster: Cluster, shop: Shop) -> None:
    rolling_back_from_the_archive(shop)
    before, schema = shop.fingerprint(), shop.schema()
    window = shop.start("run", "--confirm", demo.PHRASE)
    wait_until(lambda: sessions(cluster, "rollback"), "pg_restore running", seconds=90)

    window.send_signal(signal.SIGTERM)

    assert window.wait(timeout=60) == 5, shop.background_output()
    no_traceback(shop.background_output())
    status = shop.status()
    assert status["state"] == "rollback"
    assert status["interrupted"] is True
    assert shop.phase("rollback")["status"] == "interrupted"
    assert events(shop, "command_stopped", command="pg_restore", phase="rollback")
    assert sessions(cluster, "rollback") == 0, "pg_restore's sessions were ended"
    assert shop.banner_log() == ["on"], "the banner stays up until production is restored"
    assert shop.databases(f"{shop.prod_db}\\_failed\\_%") == [], "production not yet swapped"

    resumed = shop.window("resume")

    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    no_traceback(resumed.stdout, resumed.stderr)
    assert shop.status()["rollback"]["method"] == "restore"
    assert_rolled_back(shop, before, schema)
