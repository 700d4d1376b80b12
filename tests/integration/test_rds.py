"""RDS snapshot and restore, against moto's standalone server on loopback.

moto makes every instance and snapshot ``available`` at once and its endpoints lead nowhere:
these tests check what is asked of RDS and what comes back, not a database behind it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import boto3
import pytest

from orchestrator.cloud import rds
from orchestrator.errors import PhaseFailed, PhaseTimeout
from tests.integration.moto import aws_env, moto_server  # noqa: F401

PROD = "shop-prod"
SNAPSHOT = "shop-prod-window-0001"
RESTORED = "shop-prod-restored"


@pytest.fixture
def api(aws_env: str) -> Any:  # noqa: F811
    """The test's own RDS client (boto3 reads AWS_ENDPOINT_URL itself)."""
    return boto3.client("rds")


@pytest.fixture
def prod(api: Any) -> dict[str, Any]:
    """Production as it would be set up: private, in its own VPC, subnets, security group,
    parameter group, on a non-default port."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{n}.0/24",
                                 AvailabilityZone=f"us-east-1{zone}")["Subnet"]["SubnetId"]
               for n, zone in ((1, "a"), (2, "b"))]
    group = ec2.create_security_group(GroupName="shop-db", Description="db",
                                      VpcId=vpc)["GroupId"]
    api.create_db_subnet_group(DBSubnetGroupName="shop-subnets", SubnetIds=subnets,
                               DBSubnetGroupDescription="shop")
    api.create_db_parameter_group(DBParameterGroupName="shop-pg16", Description="shop",
                                  DBParameterGroupFamily="postgres16")
    return api.create_db_instance(  # type: ignore[no-any-return]
        DBInstanceIdentifier=PROD, Engine="postgres", DBInstanceClass="db.r6g.large",
        AllocatedStorage=50, MasterUsername="shop", MasterUserPassword="not-a-real-one",
        DBSubnetGroupName="shop-subnets", VpcSecurityGroupIds=[group],
        DBParameterGroupName="shop-pg16", Port=5433, PubliclyAccessible=False)["DBInstance"]


def soon(seconds: float = 30) -> float:
    return time.time() + seconds


def manual_snapshots(api: Any) -> list[dict[str, Any]]:
    """Snapshots someone asked for (RDS takes automated ones of its own, moto too)."""
    return api.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]  # type: ignore[no-any-return]


def make_slow(client: Any, status: str) -> None:
    """Have the server's DescribeDBSnapshots answers say ``status``, as a slow or broken AWS
    would: moto itself makes every snapshot available at once."""
    def rewrite(parsed: dict[str, Any], **_: Any) -> None:
        for snapshot in parsed.get("DBSnapshots", []):
            snapshot["Status"] = status
    client.meta.events.register("after-call.rds.DescribeDBSnapshots", rewrite)


def test_snapshot_restore_beside_production_and_how_to_switch(
        api: Any, prod: dict[str, Any]) -> None:
    snapshot = rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(), poll_seconds=0.1)
    assert snapshot["snapshot_id"] == SNAPSHOT
    assert snapshot["status"] == "available"
    assert snapshot["instance_id"] == PROD
    assert snapshot["arn"].endswith(f":snapshot:{SNAPSHOT}")
    assert datetime.fromisoformat(snapshot["created_at"]).year >= 2024
    [listed] = manual_snapshots(api)
    assert listed["DBSnapshotArn"] == snapshot["arn"]

    restored = rds.restore_snapshot(SNAPSHOT, RESTORED, deadline=soon(), poll_seconds=0.1)
    assert restored["instance_id"] == RESTORED
    assert restored["address"].startswith(f"{RESTORED}.")
    assert restored["address"] != prod["Endpoint"]["Address"]
    assert restored["port"] == 5433
    assert restored["status"] == "available"
    [new] = api.describe_db_instances(DBInstanceIdentifier=RESTORED)["DBInstances"]
    assert new["Endpoint"] == {"Address": restored["address"], "Port": 5433}
    assert new["DBInstanceClass"] == "db.r6g.large"
    assert new["DBSubnetGroup"]["DBSubnetGroupName"] == "shop-subnets"
    assert new["VpcSecurityGroups"][0]["VpcSecurityGroupId"] == \
        prod["VpcSecurityGroups"][0]["VpcSecurityGroupId"]
    assert [g["DBParameterGroupName"] for g in new["DBParameterGroups"]] == ["shop-pg16"]
    assert new["PubliclyAccessible"] is False

    text = rds.switch_instructions(rds.describe_instance(PROD), restored)
    assert f"replace {prod['Endpoint']['Address']}:5433 with {restored['address']}:5433" in text
    assert (f"aws rds modify-db-instance --db-instance-identifier {PROD}"
            f" --new-db-instance-identifier {PROD}-old --apply-immediately"
            " --region us-east-1\n") in text
    assert (f"aws rds modify-db-instance --db-instance-identifier {RESTORED}"
            f" --new-db-instance-identifier {PROD} --apply-immediately"
            " --region us-east-1\n") in text
    assert (f"aws rds wait db-instance-available --db-instance-identifier {PROD}"
            " --region us-east-1\n") in text


def test_a_repeated_restore_waits_on_its_own_instance_and_refuses_another(
        api: Any, prod: dict[str, Any]) -> None:
    rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(), poll_seconds=0.1)
    first = rds.restore_snapshot(SNAPSHOT, RESTORED, deadline=soon(), poll_seconds=0.1)
    again = rds.restore_snapshot(SNAPSHOT, RESTORED, deadline=soon(), poll_seconds=0.1)
    assert again == first
    with pytest.raises(PhaseFailed, match=f"restoring {SNAPSHOT} into {PROD} failed:"
                                          " DBInstanceAlreadyExists"):
        rds.restore_snapshot(SNAPSHOT, PROD, deadline=soon(), poll_seconds=0.1)


def test_a_snapshot_id_already_taken_is_refused_not_adopted(prod: dict[str, Any]) -> None:
    rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(), poll_seconds=0.1)
    with pytest.raises(PhaseFailed, match=f"snapshot {SNAPSHOT} already exists"
                                          f" \\(of {PROD}, taken 20"):
        rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(), poll_seconds=0.1)


def test_aws_errors_become_phase_failed(prod: dict[str, Any]) -> None:
    with pytest.raises(PhaseFailed, match="snapshotting nope as s1 failed: DBInstanceNotFound"):
        rds.create_snapshot("nope", "s1", deadline=soon(), poll_seconds=0.1)
    with pytest.raises(PhaseFailed, match="restoring s2 into r2 failed: DBSnapshotNotFound"):
        rds.restore_snapshot("s2", "r2", deadline=soon(), poll_seconds=0.1)


@pytest.mark.parametrize(("status", "error", "words"), [
    ("creating", PhaseTimeout, "is still 'creating' at the deadline"),
    ("failed", PhaseFailed, "is 'failed'"),
])
def test_a_snapshot_that_does_not_become_available(
        api: Any, prod: dict[str, Any], status: str, error: type[Exception], words: str) -> None:
    client = rds.make_client()
    make_slow(client, status)
    started = time.monotonic()
    with pytest.raises(error, match=f"snapshot {SNAPSHOT} {words}"):
        rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(0.6), poll_seconds=0.1, client=client)
    assert time.monotonic() - started < 3


def test_a_deadline_already_past_asks_nothing_of_rds(api: Any, prod: dict[str, Any]) -> None:
    with pytest.raises(PhaseTimeout, match="deadline passed"):
        rds.create_snapshot(PROD, SNAPSHOT, deadline=time.time())
    assert manual_snapshots(api) == []
    with pytest.raises(PhaseTimeout):
        rds.restore_snapshot(SNAPSHOT, RESTORED, deadline=time.time())


def test_without_its_source_instance_a_restore_stays_private(
        api: Any, prod: dict[str, Any]) -> None:
    rds.create_snapshot(PROD, SNAPSHOT, deadline=soon(), poll_seconds=0.1)
    api.delete_db_instance(DBInstanceIdentifier=PROD, SkipFinalSnapshot=True)
    client = rds.make_client()
    sent: list[dict[str, Any]] = []
    client.meta.events.register("provide-client-params.rds.RestoreDBInstanceFromDBSnapshot",
                                lambda params, **_: sent.append(dict(params)))
    restored = rds.restore_snapshot(SNAPSHOT, RESTORED, deadline=soon(), poll_seconds=0.1,
                                    client=client)
    assert restored["status"] == "available"
    assert sent[0]["PubliclyAccessible"] is False
    assert sent[0]["Tags"] == [{"Key": rds.RESTORED_FROM_TAG, "Value": SNAPSHOT}]
