"""What a window learns and journals, each under one typed key: the backup's figures, the
rollback's outcome, the rehearsal's measurements and the rest.

``journal.put(run_id, facts.BACKUP, value)`` and ``journal.get(run_id, facts.BACKUP)`` take a
``Fact[T]``: the key is spelt once, here, and the value's shape is checked where it is written
and where it is read. The shapes are ``TypedDict``: a fact is stored as JSON and read back as
the same dictionary, so what ``window status --json`` and the reports show is what was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

if TYPE_CHECKING:  # `window status` reads facts without loading psycopg
    from orchestrator.postgres.cluster_state import ClusterState
    from orchestrator.postgres.figures import TableFigures, WriteCounters

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A journal key and, through ``T``, the shape of what is recorded under it."""

    key: str


class RecomputedView(TypedDict):
    """A materialized view that a restore gave back with other contents than production held
    at the backup: stale then (its tables changed after its last refresh), recomputed by the
    restore. Rows are None where the view could not be read."""

    view: str
    rows_at_backup: int | None
    rows_in_copy: int | None


def rollback_words(method: str) -> str:
    """How production was restored, in the words the summary and ``window status`` use."""
    return {"in_place": "in place (dumped, emptied, restored)",
            "rds_snapshot": "from an RDS snapshot"}.get(method, f"by {method}")


def recomputed_words(view: RecomputedView) -> str:
    """A recomputed view in the words the summary, ``window status`` and the reports use."""
    before, after = view["rows_at_backup"], view["rows_in_copy"]
    if before == after:
        return f"{view['view']} ({before} rows at the backup and in the copy, other contents)"
    shown = [f"{n} rows" if n is not None else "unreadable" for n in (before, after)]
    return f"{view['view']} ({shown[0]} at the backup, {shown[1]} in the copy)"


class BackupFacts(TypedDict, total=False):
    """The backup: where its archive is, what it holds (rows and checksums per table, and per
    populated materialized view), the write counters at its snapshot, and the standby copy
    that proved it restorable, with the views it found recomputed."""

    path: str | None
    manifest: str
    size_bytes: int
    manifest_sha256: str
    verified: bool
    verification: str
    standby: str | None
    tables: dict[str, TableFigures]
    materialized_views: dict[str, TableFigures]  # populated ones, at the snapshot
    recomputed_views: list[RecomputedView]  # checked by the restore; [] when all came back
    writes: WriteCounters
    compress: str
    s3_uri: str
    method: str  # "rds_snapshot"; absent for an archive
    instance_id: str
    snapshot: dict[str, Any]


class RollbackFacts(TypedDict, total=False):
    """How production was given back: by swap or restore (or an RDS snapshot restored beside
    it), how long it took, where the failed database is kept, and the writes it discarded."""

    method: str
    duration_s: float
    retained_database: str
    write_gap: dict[str, int] | None
    # Rows written per table once the banner was up (the failed migration's own included),
    # counted on the retained database after a swap; None when that cannot be told.
    written_behind_banner: dict[str, int] | None
    new_instance: dict[str, Any]
    instructions: str  # what to switch to the restored RDS instance, in words
    left_behind: list[str]  # slots, subscriptions kept on the retained database, in words
    cluster_changes: list[ClusterChange]  # what no restore undoes, since preflight


class FollowFacts(TypedDict, total=False):
    """The standby following production (``[backup] follow``): the names of this run's slot,
    subscription and publications (journaled before any is made, so every end can drop
    them), how far it went, and why it did not, in words."""

    mode: str  # "follow", or "off" (the reason says why)
    reason: str
    state: str  # starting, slot, following, caught_up, fell_back, dropped
    slot: str
    subscription: str
    publications: list[str]
    standby: str | None
    snapshot_lsn: str
    schema: str  # production's tables and columns at the snapshot (a digest)
    # The file (relfilenode) of each table at the snapshot: a new one by the banner is a
    # TRUNCATE (no write counter shows one), compared by checksum.
    files: dict[str, int]
    catch_up_s: float  # behind the banner: applied, sequences copied, tables compared
    applied_lsn: str
    sequences: int
    compared: list[str]  # tables that took writes since the snapshot, equal on both sides
    # The large ones that took only writes the subscription replays, before its confirmed
    # position: not read (see following._checks).
    replayed: list[str]


# Where something of the run's may be on the server; every later state is journaled only
# once its slot, subscription and publications were dropped.
FOLLOW_LIVE = frozenset({"starting", "slot", "following"})


def follow_left(facts: FollowFacts | None) -> bool:
    """Whether a run's slot, subscription or publications may still be on the server."""
    return facts is not None and facts.get("mode") == "follow" \
        and facts.get("state") in FOLLOW_LIVE


def follow_words(facts: FollowFacts | None) -> str:
    """Whether a rollback loses writes, in the words plan, the summary and status use."""
    if facts is None:
        return ""
    if facts.get("state") == "caught_up":
        return (f"the standby followed production up to the banner ({facts.get('catch_up_s')}"
                " s behind it): a rollback loses no write")
    if facts.get("mode") == "follow" and facts.get("state") in ("slot", "following",
                                                                "starting"):
        return "the standby follows production (logical replication)"
    return f"the standby holds the backup's snapshot ({facts.get('reason', 'not followed')})"


class MigrationFacts(TypedDict):
    """What production's migration applied (from the tool's table before and after; None
    with ``tool = "none"``: nothing can tell), and the tail of its output, redacted."""

    applied: list[str] | None
    output: str


class WriteGap(TypedDict):
    write_gap: dict[str, int] | None


class DataLossAccepted(TypedDict):
    by: str
    write_gap: WriteGap  # what the paused rollback said it would discard


class ClusterChange(TypedDict):
    """A cluster-level change (a role, a membership, ALTER SYSTEM, a tablespace) made since
    the window began, which no restore of the database undoes: in words, and the SQL that
    undoes it."""

    what: str
    undo: str


class Warnings(TypedDict):
    warnings: list[str]


class FleetTag(TypedDict):
    id: str


class By(TypedDict):
    by: str


BACKUP: Fact[BackupFacts] = Fact("backup")
CLUSTER_BEFORE: Fact[ClusterState] = Fact("cluster_before")  # roles, settings..., at preflight
ROLLBACK: Fact[RollbackFacts] = Fact("rollback")
FOLLOW: Fact[FollowFacts] = Fact("follow")  # the standby following production, by name
MIGRATION: Fact[MigrationFacts] = Fact("migration")
# The write counters when the banner went up: the rollback's write gap is measured from them.
WRITES_AT_BANNER: Fact[WriteCounters] = Fact("writes_at_banner")
ROLLBACK_PAUSED: Fact[WriteGap] = Fact("rollback_paused")  # on_write_gap = "stop"
DATA_LOSS_ACCEPTED: Fact[DataLossAccepted] = Fact("data_loss_accepted")  # abort --accept-...
# This window's rehearsal: its figures (seconds per step, checks) and the files' fingerprint.
REHEARSAL: Fact[dict[str, Any]] = Fact("rehearsal")
# Set at the start: the staging phase takes this recent rehearsal of the same files as its own.
REHEARSAL_REUSED: Fact[dict[str, Any]] = Fact("rehearsal_reused")
# Set at the start: --skip-staging with [staging] skip = true, recorded as a risk.
REHEARSAL_SKIPPED: Fact[By] = Fact("rehearsal_skipped")
DRAIN: Fact[dict[str, Any]] = Fact("drain")  # the sessions waited for or ended
BASELINE_BEFORE: Fact[dict[str, Any]] = Fact("baseline_before")  # hot queries, before
BASELINE: Fact[dict[str, Any]] = Fact("baseline")  # the comparison `window status` shows
LINT: Fact[Warnings] = Fact("lint")  # the clinic's warnings, kept with the run
FLEET: Fact[FleetTag] = Fact("fleet")  # the fleet run this window belongs to
# Where each [[checks]] log file ended when the window began: log checks read what came after.
LOG_OFFSETS: Fact[dict[str, dict[str, int]]] = Fact("log_offsets")
