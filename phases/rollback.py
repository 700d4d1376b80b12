"""Rollback: production ends up holding exactly what the backup holds, and the evidence stays.

``pg_restore --clean`` would leave behind every object the migration created, so production
is never restored in place. The backup phase left a verified standby copy: rollback renames
production to ``<db>_failed_<run_id>`` (kept, never dropped) and the copy to production, then
checks the copy's verification mark (not a recount: the time must not grow with the data).
Without a usable copy, the archive is checked against its manifest, restored into a new
database, compared with the backup's checksums, and swapped in the same way. Each step looks
at what exists first, so a rollback interrupted anywhere picks up where it stopped.

Where the role may not create databases, ``[backup] rollback = "in_place"`` keeps production
as an archive instead, empties it and restores the archive into it, compared with the
backup's checksums: slower, the banner up through a dump and a restore.

Writes that reached production after the backup's snapshot are lost by any restore; the
rollback says which tables took them (they stay in the retained database). Where the standby
followed production (``[backup] follow``) up to the banner, a swap loses none; a standby
still following when the rollback begins catches up first. Writes behind the banner (the
failed migration's, and whatever the banner did not hold off) are counted from the retained
database after a swap, and said too.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, NoReturn

import psycopg

from orchestrator.engine.context import Context
from orchestrator.engine.facts import (
    BACKUP,
    CLUSTER_BEFORE,
    DATA_LOSS_ACCEPTED,
    FOLLOW,
    ROLLBACK,
    ROLLBACK_PAUSED,
    WRITES_AT_BANNER,
    BackupFacts,
    ClusterChange,
    RollbackFacts,
    WriteGap,
    follow_words,
    rollback_words,
)
from orchestrator.engine.phase import PhaseResult
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import cluster_state, databases, figures, pg, replication
from orchestrator.toolkit import following
from orchestrator.toolkit.dumps import (
    compare_with_backup,
    dump_into,
    is_marked,
    marker,
    restore_into,
    restore_into_new_database,
    seal,
    standby_name,
    suffixed,
    trusted_archive,
)


def retained_name(dbname: str, run_id: str) -> str:
    return suffixed(dbname, f"_failed_{run_id}")


def write_gap(ctx: Context, backup: BackupFacts) -> dict[str, int] | None:
    """Rows written per table between the backup's snapshot and the banner going up; None
    when that is unknown (the banner never came up cleanly enough to measure, or a counter
    went down: statistics reset or lost in a crash)."""
    if (ctx.journal.get(ctx.run_id, FOLLOW) or {}).get("state") == "caught_up":
        return {}  # the standby followed production up to the banner
    after = ctx.journal.get(ctx.run_id, WRITES_AT_BANNER)
    if after is None:
        return None
    return figures.written(backup["writes"], after)


def written_behind_banner(ctx: Context, backup: BackupFacts, retained: str
                          ) -> dict[str, int] | None:
    """Rows written per table on production once the banner was up (by the failed
    migration, and by anything the banner did not hold off: a cron job, a worker, a
    webhook), read from the retained database after the swap, so that production's return
    waits for nothing: a rollback gives those rows back to nobody. The failed migration's
    own writes and aborted transactions count too. None when it cannot be told."""
    before = ctx.journal.get(ctx.run_id, WRITES_AT_BANNER) or backup.get("writes")
    if before is None:
        return None
    try:  # its writers have ended (the swap ended them): their counters are in
        with ctx.connect(ctx.target.on(retained)) as conn:
            after = figures.write_counters(conn)
    except (PhaseFailed, psycopg.Error) as exc:  # a report, not a reason to stop
        ctx.log.warning("write_counters_unavailable", error=str(exc))
        return None
    return figures.written(before, after)


class Rollback:
    name = "rollback"

    def run(self, ctx: Context) -> PhaseResult:
        backup = ctx.journal.get(ctx.run_id, BACKUP)
        if backup is None:
            raise PhaseFailed("no backup was recorded for this window: nothing to restore from")
        started = time.monotonic()
        # A standby still following catches up first; nothing of this run's stays behind.
        gap = {} if following.rolling_back(ctx) else write_gap(ctx, backup)
        self._pause_for_gap(ctx, gap)
        if backup.get("method") == "rds_snapshot":
            self._from_snapshot(ctx, backup, gap, started)
        name = ctx.target.dbname
        if ctx.settings.backup.rollback == "in_place":
            method, retained = "in_place", self._in_place(ctx, backup)
        else:
            method, retained = self._swap_until_done(
                ctx, backup, marker(ctx.run_id, backup["tables"]),
                (name, retained_name(name, ctx.run_id), standby_name(name, ctx.run_id)))
        took = round(time.monotonic() - started, 3)
        with ctx.maintenance(ctx.target) as conn:
            behind = [] if method == "in_place" else replication.left_behind(conn, retained)
            changes = self._cluster_changes(ctx, conn)
        # In place, production itself was emptied and restored: its counters say nothing.
        late = None if method == "in_place" else written_behind_banner(ctx, backup, retained)
        facts = RollbackFacts(method=method, duration_s=took, retained_database=retained,
                              write_gap=gap, written_behind_banner=late, left_behind=behind,
                              cluster_changes=changes)
        ctx.journal.put(ctx.run_id, ROLLBACK, facts)
        ctx.log.info("production_restored", database=name, **facts)
        if gap:
            ctx.log.warning("writes_discarded", tables=gap, kept_in=retained)
        if late:
            ctx.log.warning("written_behind_banner", tables=late, kept_in=retained)
        for what in behind:
            ctx.log.warning("left_on_retained_database", what=what)
        for change in changes:
            ctx.log.warning("cluster_change_not_undone", what=change["what"], undo=change["undo"])
        lost = "; " + follow_words(ctx.journal.get(ctx.run_id, FOLLOW)) \
            if gap == {} and method == "swap" else ""
        return PhaseResult(f"production restored {rollback_words(method)}; failed database"
                           f" kept as {retained}{lost}", dict(facts))

    @staticmethod
    def _in_place(ctx: Context, backup: BackupFacts) -> str:
        """``[backup] rollback = "in_place"``, for a role that may not create databases:
        production as it is now is dumped and kept (the evidence a swap keeps as a database),
        emptied in one transaction, the archive restored into it and compared with the
        backup's checksums. Entered again, it keeps the dump it made and starts over from
        the emptying. The archive kept."""
        source = trusted_archive(ctx, backup)  # proven before anything is dropped
        evidence = source.with_name(f"{source.name}.failed")
        with ctx.maintenance(ctx.target) as conn:
            major = pg.server_major(conn)
        kept = ctx.journal.get(ctx.run_id, ROLLBACK) or {}
        if kept.get("retained_database") != str(evidence) or not evidence.is_dir():
            shutil.rmtree(evidence, ignore_errors=True)
            started = time.monotonic()
            dump_into(ctx, evidence, major, len(backup["tables"]),
                      label="pg_dump of the failed database")
            ctx.journal.put(ctx.run_id, ROLLBACK, RollbackFacts(
                method="in_place", retained_database=str(evidence)))
            ctx.log.info("failed_database_kept", archive=str(evidence),
                         duration_s=round(time.monotonic() - started, 3))
        with ctx.connect(ctx.target) as conn:
            pg.terminate_sessions(conn, dbname=ctx.target.dbname)
            dropped = databases.empty(conn)
        ctx.log.warning("production_emptied", schemas=dropped)
        took = restore_into(ctx, source, ctx.target, major, len(backup["tables"]))
        ctx.log.info("backup_restored", database=ctx.target.dbname, duration_s=round(took, 3))
        compare_with_backup(ctx, ctx.target, backup["tables"])
        return str(evidence)

    @staticmethod
    def _pause_for_gap(ctx: Context, gap: dict[str, int] | None) -> None:
        """With ``on_write_gap = "stop"``, writes a restore would discard stop the rollback
        before it touches production, until someone accepts the loss."""
        unknown = gap is None and ctx.journal.run(ctx.run_id).backup_when == "before_banner"
        if unknown:
            ctx.log.warning("write_gap_unknown")
        if not (gap or unknown) or ctx.settings.backup.on_write_gap != "stop":
            return
        if ctx.journal.get(ctx.run_id, DATA_LOSS_ACCEPTED):
            ctx.log.warning("data_loss_accepted", tables=gap)
            return
        ctx.journal.put(ctx.run_id, ROLLBACK_PAUSED, WriteGap(write_gap=gap))
        shown = ", ".join(f"{t} ~{n} rows" for t, n in (gap or {}).items()) or (
            "how many could not be measured")
        raise PhaseFailed(f"paused before restoring: production took writes after the backup"
                          f" ({shown}) that a restore would discard")

    @staticmethod
    def _from_snapshot(ctx: Context, backup: BackupFacts, gap: dict[str, int] | None,
                       started: float) -> NoReturn:
        """An RDS snapshot restores to a new instance, with a new endpoint: the window cannot
        point the application at it, so it says exactly what to switch and keeps the banner up
        (needs attention) rather than show users the broken database."""
        from orchestrator.cloud import rds  # boto3 only when RDS is used

        snapshot = backup["snapshot"]["snapshot_id"]
        new_id = f"{backup['instance_id']}-rollback-{ctx.run_id.replace('_', '-')}"[:63]
        restored = rds.restore_snapshot(snapshot, new_id, deadline=ctx.deadline, poll=ctx.poll)
        steps = rds.switch_instructions(rds.describe_instance(backup["instance_id"]), restored)
        facts = RollbackFacts(method="rds_snapshot",
                              duration_s=round(time.monotonic() - started, 3),
                              retained_database=backup["instance_id"], write_gap=gap,
                              new_instance=restored, instructions=steps)
        ctx.journal.put(ctx.run_id, ROLLBACK, facts)
        ctx.log.warning("snapshot_restored", instance=new_id, endpoint=restored.get("address"))
        raise PhaseFailed(f"snapshot {snapshot} was restored to the new instance {new_id}"
                          f" ({restored.get('address')}:{restored.get('port')}); switch the"
                          " application to it, then take the banner down")

    def _swap_until_done(self, ctx: Context, backup: BackupFacts, mark: str,
                         names: tuple[str, str, str]) -> tuple[str, str]:
        """The swap; should the server go away under it (a restart, a failover), again from
        where it stopped once the server answers, within the phase's deadline: every step
        looks at what exists first, and a restore cut short starts over. The method, and
        the database production was kept as."""
        while True:
            with ctx.maintenance(ctx.target) as conn:
                try:
                    return self._swap_checked(ctx, conn, backup, mark, names), names[1]
                except (PhaseFailed, psycopg.OperationalError) as exc:
                    if pg.answers(conn) or time.time() >= ctx.deadline:
                        raise
                    error = exc.message if isinstance(exc, PhaseFailed) else str(exc)
            ctx.log.warning("rollback_restarted", reason="the server went away",
                            error=error)

    def _swap_checked(self, ctx: Context, conn: psycopg.Connection[Any],
                      backup: BackupFacts, mark: str, names: tuple[str, str, str]) -> str:
        name, retained, copy = names
        if reopened := databases.reopen_closed(conn, [name, retained]):
            ctx.log.warning("connections_reopened", databases=reopened)
        exists = {n: databases.exists(conn, n) for n in names}
        if exists[name] and exists[retained] and not exists[copy]:  # swapped already
            return str((ctx.journal.get(ctx.run_id, ROLLBACK) or {}).get("method", "swap"))
        method = "swap"
        source = name if exists[name] else retained
        if not exists[source]:
            raise PhaseFailed(f"neither {name} nor {retained} exists any more: production's"
                              " database was dropped or renamed by hand, and with it what it"
                              f" was (owner, grants, settings); rename {copy} to {name} by"
                              " hand once you have checked it, then grant what it needs")
        if not is_marked(conn, copy, mark):
            method = "restore"
            self._restore(ctx, conn, backup, copy, like=source)
            seal(conn, copy, mark)
        if skipped := databases.copy_access(conn, source, copy):
            ctx.log.warning("database_settings_not_copied", settings=skipped)
        if exists[name]:
            self._disable_subscriptions(ctx)
        databases.swap(conn, name, retained, copy, mark=mark, deadline=ctx.deadline,
                       waiting=lambda seen: ctx.log.warning("swap_waiting_for", sessions=seen))
        ctx.log.info("production_retained", database=retained)
        return method

    @staticmethod
    def _cluster_changes(ctx: Context, conn: psycopg.Connection[Any]) -> list[ClusterChange]:
        """What changed in the cluster since preflight (roles, memberships, ALTER SYSTEM,
        tablespaces): no restore of the database undoes it, so it is named with its undo."""
        before = ctx.journal.get(ctx.run_id, CLUSTER_BEFORE)
        if before is None:  # a window begun before the cluster was recorded
            return []
        return [ClusterChange(what=d.what, undo=d.undo)
                for d in cluster_state.differences(before, cluster_state.record(conn))]

    @staticmethod
    def _disable_subscriptions(ctx: Context) -> None:
        """A subscription's apply worker holds production open, and only the subscription's
        owner may stop it: disabled, it leaves (preflight refused a role that may not)."""
        try:
            with ctx.connect(ctx.target) as production:
                if disabled := replication.disable_subscriptions(production):
                    ctx.log.warning("subscriptions_disabled", subscriptions=disabled)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PhaseFailed(f"production's subscriptions hold it open and this role may"
                              f" not disable them: {exc.diag.message_primary}; as their"
                              " owner: ALTER SUBSCRIPTION ... DISABLE") from exc

    @staticmethod
    def _restore(ctx: Context, conn: psycopg.Connection[Any], backup: BackupFacts,
                 copy: str, like: str) -> None:
        ctx.log.warning("standby_unusable", database=copy, falling_back_to=backup["path"])
        took = restore_into_new_database(ctx, conn, trusted_archive(ctx, backup), copy, like=like,
                                         tables=len(backup["tables"]))
        ctx.log.info("backup_restored", database=copy, duration_s=round(took, 3))
        # An archive already proven by restore, unchanged since (its manifest), restores to
        # the same data: counting rows is check enough. An unproven one is checksummed.
        compare_with_backup(ctx, ctx.target.on(copy), backup["tables"],
                            checksums=not backup.get("verified"))
