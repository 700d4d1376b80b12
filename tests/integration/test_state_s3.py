"""The S3 state backend against moto's standalone server and a real PostgreSQL: a window's
journal and lease outlive the machine that started it.

"Another machine" is a second copy of the project folder: its own state folder (empty), its
own backups folder and banner log, sharing only the S3 prefix and the databases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from orchestrator.commands import demo
from tests.integration.moto import aws_env, moto_server  # noqa: F401 - fixtures
from tests.support.processes import pid_alive
from tests.support.shop import Shop
from tests.support.waiting import wait_until

BUCKET = "windows"
PREFIX = "shop-prod"
TTL = 3.0
# The migration sleeps on production only where a file says so: on machine A.
pytestmark = pytest.mark.usefixtures("aws_env")
SLOW_ON_A = ('psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
             'if [ "$WINDOW_PHASE" = migrate ] && [ -f slow ]; then'
             " sleep 120 & echo $! > sleeper.pid; wait; fi")


def s3() -> Any:
    return boto3.client("s3")


def configure(shop: Shop, **overrides: Any) -> None:
    state = f'\n[state]\nbackend = "s3"\nuri = "s3://{BUCKET}/{PREFIX}"\nlease_ttl = {TTL}\n'
    shop.configure(migrate=SLOW_ON_A, contacts=demo.DEMO_CONTACTS + state, **overrides)
    shop.env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    shop.env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    s3().create_bucket(Bucket=BUCKET)


def machine_b(shop: Shop) -> Path:
    """A second checkout of the project, as on another runner: nothing local in common."""
    other = shop.folder.parent / "machine-b"
    shutil.copytree(shop.folder, other, ignore=shutil.ignore_patterns(
        ".window", "backups", "banner.log", "slow", "sleeper.pid", "maintenance.on"))
    return other


def on(shop: Shop, folder: Path, *args: str, timeout: float = 120
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=folder,
                          env=shop.env, text=True, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def status_on(shop: Shop, folder: Path) -> dict[str, Any]:
    done = on(shop, folder, "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def shared(key: str) -> tuple[bytes, str, dict[str, str]]:
    obj = s3().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
    return obj["Body"].read(), obj["ETag"], obj["Metadata"]


def lease() -> dict[str, Any]:
    return json.loads(shared("lease.json")[0])  # type: ignore[no-any-return]


def start_slow_on_a(shop: Shop) -> tuple[subprocess.Popen[str], int]:
    (shop.folder / "slow").touch()
    return shop.start_until_sleeping()


def test_a_window_killed_mid_migrate_is_resumed_from_another_machine(shop: Shop) -> None:
    configure(shop)
    other = machine_b(shop)
    window, sleeper = start_slow_on_a(shop)

    # Machine B starts with an empty state folder and sees the same window, leased by A.
    seen = status_on(shop, other)
    assert seen["state"] == "migrate"
    assert seen["lease"]["live"] is True and seen["lease"]["token"] == 1
    window.send_signal(signal.SIGKILL)
    window.wait(timeout=10)

    wait_until(lambda: time.time() > lease()["expires_at"], "the lease expiring", TTL + 5)
    resumed = on(shop, other, "resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert status_on(shop, other)["state"] == "completed"
    assert status_on(shop, shop.folder)["state"] == "completed"  # machine A's stale cache
    assert shop.has_column("orders", "status")
    assert shop.banner_log() == ["on"]  # raised on A, lowered on B
    assert (other / "banner.log").read_text().split() == ["off"]
    assert not pid_alive(sleeper)
    assert lease()["token"] == 2 and lease()["released"] is True
    assert shared("journal.sqlite")[2]["fencing-token"] == "2"
    run_id = seen["run_id"]
    assert shared(f"reports/{run_id}.md")[0].startswith(b"#")
    assert shared(f"backups/{run_id}.sha256")[0]


def test_a_paused_holder_whose_lease_was_taken_stops_without_writing(shop: Shop) -> None:
    configure(shop)
    other = machine_b(shop)
    window, _sleeper = start_slow_on_a(shop)
    window.send_signal(signal.SIGSTOP)  # a runner frozen mid-migrate (a paused VM, a GC)
    try:
        wait_until(lambda: time.time() > lease()["expires_at"], "the lease expiring", TTL + 5)
        resumed = on(shop, other, "resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        _journal, etag, meta = shared("journal.sqlite")
        assert meta["fencing-token"] == "2"
    finally:
        window.send_signal(signal.SIGCONT)

    assert window.wait(timeout=30) == 6
    assert "lost the window's lease" in shop.background_output()
    assert shared("journal.sqlite")[1] == etag  # nothing written by the old holder
    assert status_on(shop, other)["state"] == "completed"
    assert lease()["token"] == 2
    assert shop.banner_log() == ["on"]  # the old holder did not act on the world either


def test_unlock_breaks_a_live_lease_behind_the_phrase_and_is_audited(shop: Shop) -> None:
    configure(shop)
    other = machine_b(shop)
    window, _sleeper = start_slow_on_a(shop)

    refused = on(shop, other, "unlock")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert lease()["broken_by"] is None

    unlocked = on(shop, other, "unlock", "--confirm", demo.PHRASE)

    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    assert window.wait(timeout=30) == 6  # the holder sees it at its next renewal
    audit = [json.loads(line) for line in (other / ".window" / "audit.jsonl").read_text()
             .splitlines()]
    broken = [e for e in audit if e["event"] == "lease_broken"]
    assert broken and broken[0]["token"] == 1 and broken[0]["pid"] == window.pid
    records = s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/unlocks/")["Contents"]
    assert len(records) == 1
    assert any(o["Key"].startswith(f"{PREFIX}/audit/")
               for o in s3().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"])

    resumed = on(shop, other, "resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert status_on(shop, other)["state"] == "completed"


def test_another_machine_rolls_back_from_the_archive_in_s3(shop: Shop) -> None:
    configure(shop)
    config = shop.folder / "window.toml"  # no standby copy: rollback must restore the archive
    config.write_text(config.read_text().replace("jobs = 2\n", 'jobs = 2\nverify = "list"\n'))
    other = machine_b(shop)
    before = shop.fingerprint()
    window, _sleeper = start_slow_on_a(shop)
    window.send_signal(signal.SIGKILL)
    window.wait(timeout=10)
    shutil.rmtree(shop.folder)  # machine A is gone, and its archive with it
    wait_until(lambda: time.time() > lease()["expires_at"], "the lease expiring", TTL + 5)

    aborted = on(shop, other, "abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "archive_downloaded" in aborted.stderr
    assert status_on(shop, other)["state"] == "rolled_back"
    assert shop.fingerprint() == before
    assert (other / ".window" / "reports").is_dir()
    assert (other / "backups").is_dir()


def test_a_second_runner_is_refused_while_the_lease_is_live(shop: Shop) -> None:
    configure(shop)
    other = machine_b(shop)
    window, _sleeper = start_slow_on_a(shop)

    second = on(shop, other, "run", "--confirm", demo.PHRASE)

    assert second.returncode == 6, second.stdout + second.stderr
    assert "another runner holds this window's lease" in second.stderr
    assert status_on(shop, other)["lease"]["live"] is True
    window.kill()


def test_abort_from_another_machine_reaches_the_live_runner(shop: Shop) -> None:
    configure(shop)
    other = machine_b(shop)
    before = shop.fingerprint()
    window, _sleeper = start_slow_on_a(shop)

    aborted = on(shop, other, "abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "ended rolled_back" in aborted.stdout
    assert window.wait(timeout=30) == 1  # the runner on A rolled back, by itself
    assert lease()["token"] == 1  # never taken over: asked through abort.json
    assert shop.fingerprint() == before
    assert shop.banner_log() == ["on", "off"]
