"""RDS snapshots as the backup method: a snapshot before the change, a restore beside it after.

RDS never restores over an instance: a restore builds a new one from the snapshot, so moving
production onto it is the on-call engineer's call, spelled out by ``switch_instructions``,
never done behind their back. The restore copies from the snapshot's instance what RDS would
otherwise reset to its defaults (class, port, subnet group, security groups, parameter and
option groups, Multi-AZ, public access, storage type): without them the new instance lands in
the default VPC, where the app cannot reach it or everyone can.

Waits poll until ``available``, bounded by the window's deadline; past it AWS carries on (a
snapshot or a restore cannot be cancelled) and PhaseTimeout says so. A snapshot id already
taken is an error, never adopted: it could hold last week's data. A restore repeated after a
crash waits on the instance it already started (tagged ``window:restored-from``).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from botocore.config import Config
from botocore.exceptions import ClientError

from orchestrator.cloud import aws
from orchestrator.errors import PhaseFailed, PhaseTimeout

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef, DBSnapshotTypeDef

RESTORED_FROM_TAG = "window:restored-from"
NAME_LIMIT = 63  # RDS instance identifiers
# Statuses an instance or snapshot does not come back from by waiting.
_BROKEN = frozenset({
    "failed", "deleting", "deleted", "restore-error", "storage-full", "incompatible-restore",
    "incompatible-network", "incompatible-parameters", "incompatible-option-group",
    "inaccessible-encryption-credentials",
})
T = TypeVar("T")
Poll = Callable[[], None]


def make_client() -> RDSClient:
    config = Config(connect_timeout=10, read_timeout=30,
                    retries={"mode": "standard", "max_attempts": 3})
    return cast("RDSClient", aws.client("rds", config))


def create_snapshot(instance_id: str, snapshot_id: str, *, deadline: float,
                    poll_seconds: float = 5, client: RDSClient | None = None,
                    poll: Poll = lambda: None) -> dict[str, Any]:
    """Snapshot the instance and wait until the snapshot is available: its id, arn, status,
    instance and creation time (ISO 8601)."""
    aws.check_deadline(deadline, f"before starting snapshot {snapshot_id}")
    rds = client or make_client()
    with aws.boundary(f"snapshotting {instance_id} as {snapshot_id}"):
        try:
            rds.create_db_snapshot(DBInstanceIdentifier=instance_id,
                                   DBSnapshotIdentifier=snapshot_id)
        except ClientError as exc:
            if _code(exc) == "DBSnapshotAlreadyExists":
                raise _snapshot_taken(rds, snapshot_id) from exc
            raise
        snapshot = _wait_available(lambda: _snapshot(rds, snapshot_id), lambda s: s["Status"],
                                   f"snapshot {snapshot_id}", deadline=deadline,
                                   poll_seconds=poll_seconds, poll=poll)
    created = snapshot.get("SnapshotCreateTime")
    return {"snapshot_id": snapshot_id, "arn": snapshot.get("DBSnapshotArn", ""),
            "status": snapshot["Status"], "instance_id": snapshot.get("DBInstanceIdentifier"),
            "created_at": created.isoformat() if created else None}


def restore_snapshot(snapshot_id: str, new_instance_id: str, *, deadline: float,
                     poll_seconds: float = 5, client: RDSClient | None = None,
                     poll: Poll = lambda: None) -> dict[str, Any]:
    """Restore the snapshot into a new instance set up like the one it was taken from, and
    wait until it is available: its instance_id, address, port, status, arn, snapshot_id."""
    aws.check_deadline(deadline, f"before starting to restore {snapshot_id}")
    rds = client or make_client()
    with aws.boundary(f"restoring {snapshot_id} into {new_instance_id}"):
        snapshot = _snapshot(rds, snapshot_id)
        if snapshot["Status"] != "available":
            raise PhaseFailed(f"snapshot {snapshot_id} is {snapshot['Status']!r}, not available")
        request = {"DBInstanceIdentifier": new_instance_id, "DBSnapshotIdentifier": snapshot_id,
                   "Tags": [{"Key": RESTORED_FROM_TAG, "Value": snapshot_id}],
                   **_settings_of(rds, snapshot.get("DBInstanceIdentifier", ""))}
        try:
            rds.restore_db_instance_from_db_snapshot(**request)
        except ClientError as exc:
            if _code(exc) != "DBInstanceAlreadyExists" or not _restored_from(
                    rds, new_instance_id, snapshot_id):
                raise
        instance = _wait_available(lambda: _instance(rds, new_instance_id),
                                   lambda i: i["DBInstanceStatus"],
                                   f"instance {new_instance_id}", deadline=deadline,
                                   poll_seconds=poll_seconds, poll=poll)
    return {**_endpoint(instance), "snapshot_id": snapshot_id}


def describe_instance(instance_id: str, *, client: RDSClient | None = None) -> dict[str, Any]:
    """instance_id, address, port, status and arn of an instance, as ``restore_snapshot``
    returns them: the other half of ``switch_instructions``."""
    rds = client or make_client()
    with aws.boundary(f"describing {instance_id}"):
        return _endpoint(_instance(rds, instance_id))


def switch_instructions(old_instance: Mapping[str, Any], new_instance: Mapping[str, Any]) -> str:
    """What the on-call engineer runs to move production onto the restored instance."""
    old, new = old_instance["instance_id"], new_instance["instance_id"]
    old_endpoint = f"{old_instance['address']}:{old_instance['port']}"
    new_endpoint = f"{new_instance['address']}:{new_instance['port']}"
    parked = f"{old[: NAME_LIMIT - 4]}-old"
    region = _region_of(new_instance) or _region_of(old_instance)
    where = f" --region {shlex.quote(region)}" if region else ""
    old, new, parked = shlex.quote(old), shlex.quote(new), shlex.quote(parked)
    return "\n".join([
        f"The restored database runs on RDS instance {new} at {new_endpoint}; production"
        f" still points at {old} ({old_endpoint}). User names and passwords are the old"
        " instance's: they came with the snapshot.",
        "Switch production in ONE of two ways:",
        f"  A. New endpoint: in DATABASE_URL (or the app's secret) replace {old_endpoint}"
        f" with {new_endpoint}, then redeploy or restart the app.",
        f"  B. Same endpoint: rename the instances so that {old_instance['address']} leads to"
        " the restored one (each rename drops connections for a moment; DNS follows within"
        " minutes; a `wait` that says not found is early: run it again):",
        f"     aws rds modify-db-instance --db-instance-identifier {old}"
        f" --new-db-instance-identifier {parked} --apply-immediately{where}",
        f"     aws rds wait db-instance-available --db-instance-identifier {parked}{where}",
        f"     aws rds modify-db-instance --db-instance-identifier {new}"
        f" --new-db-instance-identifier {old} --apply-immediately{where}",
        f"     aws rds wait db-instance-available --db-instance-identifier {old}{where}",
        f"Keep the old instance ({old}, or {parked} after B) until the app is verified on the"
        " restored data; it is billed until deleted.",
    ])


def _settings_of(rds: RDSClient, instance_id: str) -> dict[str, Any]:
    """What a restore would reset to defaults, from the snapshot's instance; if that is gone,
    public access alone is pinned off."""
    try:
        source = _instance(rds, instance_id)
    except ClientError as exc:
        if _code(exc) != "DBInstanceNotFound":
            raise
        return {"PubliclyAccessible": False}
    storage = source.get("StorageType")
    settings = {
        "DBInstanceClass": source.get("DBInstanceClass"),
        "Port": source.get("Endpoint", {}).get("Port") or source.get("DbInstancePort"),
        "DBSubnetGroupName": source.get("DBSubnetGroup", {}).get("DBSubnetGroupName"),
        "VpcSecurityGroupIds": [g["VpcSecurityGroupId"] for g in
                                source.get("VpcSecurityGroups", []) if "VpcSecurityGroupId" in g],
        "DBParameterGroupName": next((g.get("DBParameterGroupName") for g in
                                      source.get("DBParameterGroups", [])), None),
        "OptionGroupName": next((g.get("OptionGroupName") for g in
                                 source.get("OptionGroupMemberships", [])
                                 if not g.get("OptionGroupName", "").startswith("default:")),
                                None),
        "MultiAZ": source.get("MultiAZ"),
        "PubliclyAccessible": source.get("PubliclyAccessible"),
        "StorageType": storage,
        "Iops": source.get("Iops") if storage in {"io1", "io2"} else None,
    }
    return {key: value for key, value in settings.items() if value not in (None, [])}


def _restored_from(rds: RDSClient, instance_id: str, snapshot_id: str) -> bool:
    tags = _instance(rds, instance_id).get("TagList", [])
    return any(tag.get("Key") == RESTORED_FROM_TAG and tag.get("Value") == snapshot_id
               for tag in tags)


def _snapshot_taken(rds: RDSClient, snapshot_id: str) -> PhaseFailed:
    existing = _snapshot(rds, snapshot_id)
    taken = existing.get("SnapshotCreateTime")
    return PhaseFailed(
        f"snapshot {snapshot_id} already exists (of {existing.get('DBInstanceIdentifier')},"
        f" taken {taken.isoformat() if taken else 'at an unknown time'}): a window takes a"
        " fresh snapshot, so give it another id")


def _wait_available(describe: Callable[[], T], status_of: Callable[[T], str], what: str, *,
                    deadline: float, poll_seconds: float, poll: Poll) -> T:
    while True:
        item = describe()
        status = status_of(item)
        if status == "available":
            return item
        if status in _BROKEN:
            raise PhaseFailed(f"{what} is {status!r}")
        poll()
        left = deadline - time.time()
        if left <= 0:
            raise PhaseTimeout(f"{what} is still {status!r} at the deadline; AWS carries on"
                               " with it")
        time.sleep(min(poll_seconds, left))


def _snapshot(rds: RDSClient, snapshot_id: str) -> DBSnapshotTypeDef:
    return rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"][0]


def _instance(rds: RDSClient, instance_id: str) -> DBInstanceTypeDef:
    return rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][0]


def _endpoint(instance: DBInstanceTypeDef) -> dict[str, Any]:
    endpoint = instance.get("Endpoint", {})
    return {"instance_id": instance.get("DBInstanceIdentifier", ""),
            "address": endpoint.get("Address", ""), "port": endpoint.get("Port", 0),
            "status": instance.get("DBInstanceStatus", ""),
            "arn": instance.get("DBInstanceArn", "")}


def _region_of(instance: Mapping[str, Any]) -> str:
    """``arn:aws:rds:<region>:<account>:db:<id>`` -> region; empty without an ARN."""
    parts = str(instance.get("arn", "")).split(":")
    return parts[3] if len(parts) > 3 else ""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
