"""Backups off the machine, through the real CLI: S3 (upload, verify, restore from S3 when the
local copy is gone) and RDS snapshots, against moto's standalone server on loopback."""

from __future__ import annotations

import os
import shutil
import signal

import boto3

from orchestrator.commands import demo
from tests.integration.moto import aws_env, moto_server  # noqa: F401
from tests.support.shop import SLOW_ON_PRODUCTION, Shop, failing_migration

BUCKET = "shop-backups"


def with_aws(shop: Shop, backup_lines: str) -> None:
    shop.env.update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "NO_PROXY"))})
    shop.config.write_text(shop.config.read_text().replace(
        "jobs = 2\n", f"jobs = 2\n{backup_lines}\n"))


def test_archive_is_uploaded_and_verified(shop: Shop, aws_env: str) -> None:  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    with_aws(shop, f's3_uri = "s3://{BUCKET}/shop"')

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    run_id = shop.status()["run_id"]
    assert shop.status()["backup"]["s3_uri"] == f"s3://{BUCKET}/shop/{run_id}"
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    local = {f"shop/{run_id}/{p.name}" for p in (shop.folder / "backups" / run_id).iterdir()}
    assert keys == local | {f"shop/{run_id}.sha256"}
    assert "backup_uploaded" in done.stderr
    listing = shop.window("backups").stdout
    assert f"s3://{BUCKET}/shop/{run_id}" in listing
    assert f"archives on s3://{BUCKET}/shop:\n  {run_id}" in listing


def test_rollback_fetches_the_archive_from_s3_when_the_local_copy_is_gone(
        shop: Shop, aws_env: str) -> None:  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    with_aws(shop, f's3_uri = "s3://{BUCKET}/shop"')
    before = shop.fingerprint()
    window, _sleeper = shop.start_until_sleeping()
    window.send_signal(signal.SIGKILL)  # the machine is gone ...
    window.wait(timeout=10)
    shutil.rmtree(shop.folder / "backups")  # ... and its disk with it
    run_id = shop.status()["run_id"]
    shop.cluster.psql(f'DROP DATABASE "{shop.prod_db}_window_{run_id}" WITH (FORCE)')

    aborted = shop.window("abort", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "archive_downloaded" in aborted.stderr
    assert shop.status()["rollback"]["method"] == "restore"
    assert shop.fingerprint() == before
    assert shop.banner_log() == ["on", "off"]


def test_rds_snapshot_backup_and_rollback_to_a_new_instance(
        shop: Shop, aws_env: str) -> None:  # noqa: F811
    boto3.client("rds").create_db_instance(
        DBInstanceIdentifier="shop-prod", DBInstanceClass="db.t3.micro", Engine="postgres",
        MasterUsername="admin", MasterUserPassword="not-used-1", AllocatedStorage=20)
    failing_migration(shop)
    with_aws(shop, 'method = "rds_snapshot"\n\n[backup.rds]\ninstance_id = "shop-prod"')

    done = shop.run_window()

    assert done.returncode == 4, done.stdout + done.stderr
    snapshots = boto3.client("rds").describe_db_snapshots(DBInstanceIdentifier="shop-prod")
    ours = [s for s in snapshots["DBSnapshots"] if s["DBSnapshotIdentifier"].startswith("window-")]
    assert [s["Status"] for s in ours] == ["available"]
    rollback = shop.status()["rollback"]
    assert rollback["method"] == "rds_snapshot"
    new = rollback["new_instance"]
    assert new["instance_id"].startswith("shop-prod-rollback-")
    assert new["address"] in done.stdout
    assert "shop-prod" in done.stdout and "modify-db-instance" in done.stdout
    assert shop.banner_log() == ["on"], "the banner stays up until someone switches"
