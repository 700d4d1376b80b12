"""The standby follows production until the banner is up: what the backup, migrate and
rollback phases do with ``postgres/follow.py``, and every end's clean-up.

The backup creates this run's publications and slot (the slot's snapshot is the one the dump
reads), then subscribes the proven standby to it. Behind the banner, production drained,
``catch_up`` waits (``[backup] follow_catch_up``) until the standby has applied production's
current position, drops the subscription, the slot and the publications, copies the
sequences, compares on both sides the tables that took writes replication may have missed
(``_checks``) and seals the standby again: a swap rollback then gives back production as it
was at the banner.

Whatever stops it (wal_level below logical, no REPLICATION, no right to subscribe, DDL
during the backup, a catch-up past its limit) the window goes on as with ``follow = "off"``:
the standby holds the snapshot and the rollback reports the write gap. The names are
journaled (``FOLLOW``) before anything is made, so every end drops whatever exists.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from orchestrator import crash
from orchestrator.config import Settings
from orchestrator.engine.context import Context
from orchestrator.engine.facts import BACKUP, FOLLOW, FOLLOW_LIVE, FollowFacts
from orchestrator.errors import PhaseFailed
from orchestrator.postgres import databases, follow, pg
from orchestrator.postgres.figures import (
    LARGE_OBJECTS,
    SMALL_BYTES,
    WriteCounters,
    relation_sizes,
    write_counters,
)
from orchestrator.toolkit.dumps import describe, marker, seal, standby_name, suffixed

POLL_SECONDS = 0.05


def settings_say(settings: Settings) -> str | None:
    """Why this configuration does not follow production, or None when it may."""
    backup = settings.backup
    if backup.follow == "off":
        return '[backup] follow = "off"'
    if backup.method != "pg_dump":
        return "the backup is an RDS snapshot"
    if backup.when == "after_banner":
        return 'when = "after_banner": the banner is up through the backup, nothing to follow'
    if backup.verify != "restore" or backup.rollback != "swap":
        return 'no standby to follow with verify = "list" or rollback = "in_place"'
    return None


def why_not(settings: Settings, conn: psycopg.Connection[Any]) -> str | None:
    """Why this window will not follow production (settings first, then the server and the
    role), or None when it will."""
    return settings_say(settings) or follow.why_not(conn)


def _put(ctx: Context, facts: FollowFacts) -> None:
    ctx.journal.put(ctx.run_id, FOLLOW, facts)


def _off(ctx: Context, reason: str) -> None:
    ctx.log.warning("follow_off", reason=reason)
    _put(ctx, FollowFacts(mode="off", reason=reason, state="dropped"))


@contextmanager
def snapshot(ctx: Context, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """The snapshot the backup dumps, in ``conn``'s REPEATABLE READ transaction: where the
    window follows production, the one this run's new slot exports (its publications made
    first); otherwise one exported by ``conn``. Importable until the block ends."""
    with ctx.connect(ctx.target) as production:
        reason = why_not(ctx.settings, production)
    if reason is not None:
        _put(ctx, FollowFacts(mode="off", reason=reason, state="dropped"))
        yield _export(conn)
        return
    names = follow.names(ctx.run_id)
    facts = FollowFacts(mode="follow", state="starting", slot=names.slot,
                        subscription=names.subscription, publications=[],
                        standby=standby_name(ctx.target.dbname, ctx.run_id))
    _put(ctx, facts)  # checkpoint, then act: every end drops what these names find
    try:
        stop(ctx)  # the phase entered again starts over
        with ctx.connect(ctx.target) as production:
            facts["publications"] = follow.create_publications(production, ctx.run_id)
            crash.point("pg.follow.publications")
        _check_published(facts["publications"])
        held = follow.slot_with_snapshot(ctx.target, names.slot, ctx.deadline)
        slot = held.__enter__()
    except (psycopg.Error, PhaseFailed, _FallBack) as exc:
        stop(ctx)
        _off(ctx, str(exc) if isinstance(exc, _FallBack) else
             f"the slot could not be made: {_message(exc)}")
        yield _export(conn)
        return
    try:
        crash.point("pg.follow.slot")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(slot.snapshot)))
        facts.update(FollowFacts(state="slot", snapshot_lsn=slot.lsn,
                                 schema=follow.schema_digest(conn),
                                 files=follow.files(conn)))
        _put(ctx, facts)
        ctx.log.info("follow_slot_created", slot=slot.name, lsn=slot.lsn,
                     publications=facts["publications"])
        yield slot.snapshot
    finally:
        held.__exit__(None, None, None)


def _export(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    return str(row[0]) if row else ""


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def subscribe(ctx: Context) -> None:
    """The proven standby subscribes to this run's slot (opened to its owner again: an apply
    worker cannot enter a database closed to connections); any failure falls back."""
    facts = ctx.journal.get(ctx.run_id, FOLLOW)
    if facts is None or facts.get("state") != "slot":
        return
    standby = str(facts.get("standby"))
    try:
        with ctx.connect(ctx.target) as production:
            _check_schema(production, facts)
        with ctx.maintenance(ctx.target) as conn:
            databases.set_allow_connections(conn, standby, allow=True)
        with ctx.connect(ctx.target.on(standby)) as copy:
            follow.subscribe(copy, ctx.run_id, follow.source_conninfo(ctx.target),
                             facts.get("publications", []))
        crash.point("pg.follow.subscribed")
    except (psycopg.Error, _FallBack) as exc:
        fall_back(ctx, f"the standby could not subscribe: {_message(exc)}"
                  if isinstance(exc, psycopg.Error) else str(exc))
        return
    facts["state"] = "following"
    _put(ctx, facts)
    ctx.log.info("standby_following", standby=standby, subscription=facts.get("subscription"),
                 **_replay_backlog(ctx, str(facts.get("slot"))))


def _replay_backlog(ctx: Context, slot: str) -> dict[str, Any]:
    """What production wrote during the dump and the proof, applied before the banner goes
    up (users do not wait for it), within ``follow_catch_up`` at most: whatever is left is
    the catch-up's."""
    started = time.monotonic()
    limit = started + min(ctx.settings.backup.follow_catch_up, ctx.remaining() / 2)
    with ctx.connect(ctx.target) as production:
        target = follow.current_lsn(production)
        while (lag := follow.lag_bytes(production, slot, target)) and \
                time.monotonic() < limit:
            ctx.poll()
            time.sleep(POLL_SECONDS * 4)
    return {"backlog_lag_bytes": lag, "backlog_s": round(time.monotonic() - started, 3)}


class _FallBack(Exception):  # a reason to fall back, never raised out of this module
    pass


def _check_schema(production: psycopg.Connection[Any], facts: FollowFacts) -> None:
    if follow.schema_digest(production) != facts.get("schema"):
        raise _FallBack("production's tables changed (DDL) during the backup")


def _check_published(published: list[str]) -> None:
    if not published:
        raise _FallBack("production has no table to publish")


def fall_back(ctx: Context, reason: str) -> None:
    """Drop this run's slot, subscription and publications, reseal the standby as the
    backup's snapshot plus whatever it applied, and go on as with ``follow = "off"``."""
    facts = ctx.journal.get(ctx.run_id, FOLLOW) or FollowFacts()
    stop(ctx)
    _reseal(ctx, facts)
    facts.update(FollowFacts(state="fell_back", reason=reason))
    _put(ctx, facts)
    ctx.log.warning("follow_fell_back", reason=reason,
                    consequence="a rollback loses the writes made since the backup's snapshot")


def _reseal(ctx: Context, facts: FollowFacts) -> None:
    standby = facts.get("standby")
    backup = ctx.journal.get(ctx.run_id, BACKUP)
    if not standby or backup is None or not backup.get("verified"):
        return
    with ctx.maintenance(ctx.target) as conn:
        if databases.exists(conn, standby):
            seal(conn, standby, marker(ctx.run_id, backup["tables"]))


def catch_up(ctx: Context) -> str:
    """Behind the banner, production drained: the standby applies the rest, bounded by
    ``[backup] follow_catch_up``; then it is detached and sealed, sequences copied and the
    tables that took writes compared. What happened, in words (empty when not following).
    Users wait through it: one connection to each side does it all but the comparison."""
    facts = ctx.journal.get(ctx.run_id, FOLLOW)
    if facts is None or facts.get("mode") != "follow":
        return ""
    if facts.get("state") != "following":
        if facts.get("state") in FOLLOW_LIVE:
            fall_back(ctx, "the standby never subscribed")
        return str(facts.get("reason", ""))
    started = time.monotonic()
    standby = str(facts.get("standby"))
    took: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        took[name] = round(time.monotonic() - since, 3)
        return time.monotonic()

    try:
        with ctx.connect(ctx.target) as production, \
                ctx.connect(ctx.target.on(standby)) as copy:
            applied = _wait_applied(ctx, facts, production)
            # A trigger firing as the standby applies a change may write any table there.
            trusted = not follow.fires_on_apply(copy)
            by_key = follow.replayed_by_key(production, ctx.run_id)
            inserted = follow.published(production, ctx.run_id)
            since = step("applied_s", started)
            _let_go(ctx, production, copy)
            since = step("let_go_s", since)
            follow.set_sequences(copy, values := follow.sequence_values(production))
            since = step("sequences_s", since)
            checked, replayed = _checks(ctx, production, facts, applied, by_key=by_key,
                                        inserted=inserted, trusted=trusted)
            since = step("written_s", since)
        compared = _compare(ctx, standby, checked)
        since = step("compared_s", since)
    except (psycopg.Error, PhaseFailed, _FallBack) as exc:
        fall_back(ctx, _message(exc) if isinstance(exc, psycopg.Error) else str(exc))
        return str((ctx.journal.get(ctx.run_id, FOLLOW) or {}).get("reason", ""))
    _reseal(ctx, facts)
    step("sealed_s", since)
    facts.update(FollowFacts(state="caught_up", catch_up_s=round(time.monotonic() - started, 3),
                             applied_lsn=applied.lsn, sequences=len(values),
                             compared=compared,
                             replayed=sorted(t.qualified for t in replayed)))
    _put(ctx, facts)
    ctx.log.info("standby_caught_up", catch_up_s=facts["catch_up_s"], applied_lsn=applied.lsn,
                 sequences=len(values), compared=len(compared), replayed=len(replayed),
                 **took)
    return ""


class Applied(NamedTuple):
    """Production's position the standby applied, and what was read just before it was
    taken: anything written after may have come after that position, which the
    subscription did not replay."""

    lsn: str
    counters: WriteCounters
    clock: str  # the server's


def _wait_applied(ctx: Context, facts: FollowFacts, production: psycopg.Connection[Any]
                  ) -> Applied:
    """Production's current position, once the slot's subscriber has applied it."""
    limit = time.monotonic() + min(ctx.settings.backup.follow_catch_up, ctx.remaining())
    slot = str(facts.get("slot"))
    live = sys.stderr.isatty()
    _check_schema(production, facts)
    if follow.subscription_database(production, ctx.run_id) is None:
        raise _FallBack("the standby no longer follows production (its subscription is"
                        " gone: the window was interrupted while it let go)")
    clock = production.execute("SELECT clock_timestamp()::text").fetchone()
    before = write_counters(production)
    target = follow.current_lsn(production)
    while True:
        lag = follow.lag_bytes(production, slot, target)
        if lag is None:
            raise _FallBack(f"the slot {slot} is gone")
        if live:
            sys.stderr.write(f"\r  standby catching up: {lag} bytes behind   ")
            sys.stderr.flush()
        if lag == 0:
            if live:
                sys.stderr.write("\n")
            return Applied(target, before, str(clock[0]) if clock else "-infinity")
        if time.monotonic() >= limit:
            ctx.log.warning("follow_catch_up_exceeded", lag_bytes=lag,
                            limit_s=ctx.settings.backup.follow_catch_up)
            raise _FallBack(f"the standby was still {lag} bytes behind after"
                            f" {ctx.settings.backup.follow_catch_up:g} s ([backup]"
                            " follow_catch_up)")
        ctx.poll()
        time.sleep(POLL_SECONDS)


def _let_go(ctx: Context, production: psycopg.Connection[Any],
            copy: psycopg.Connection[Any]) -> None:
    """The subscription detached and dropped, then the slot and the publications."""
    names = follow.names(ctx.run_id)
    follow.unsubscribe(copy, ctx.run_id)
    crash.point("pg.follow.unsubscribed")
    follow.drop_slot(production, names.slot)
    crash.point("pg.follow.slot_dropped")
    follow.drop_publications(production, ctx.run_id)
    ctx.log.info("follow_dropped", slot=names.slot, subscription=names.subscription)


def _checks(ctx: Context, production: psycopg.Connection[Any], facts: FollowFacts,
            applied: Applied, *, by_key: set[str], inserted: set[str],
            trusted: bool) -> tuple[list[pg.Table], list[pg.Table]]:
    """The tables to compare on both sides, and those the subscription is known to have
    replayed whole (large ones, whose rows would cost seconds of downtime to read).

    Compared: every table that took writes since the snapshot (its write counters moved,
    or it has a new file: a TRUNCATE, which no counter shows) but those replayed, and every
    small one not published by key (``by_key``: for every operation, with a primary key or
    REPLICA IDENTITY index) whatever its counters say, as is every one not published by key
    unless the counters hold every commit (no other session busy within
    ``follow.STATS_IDLE_SECONDS`` of the target: a session's last second of writes may
    reach them that much later).

    Replayed, not read: a large table (``figures.SMALL_BYTES`` or more) whose writes all
    came before the position the subscriber confirmed (production quiet since, its counters
    unmoved since then), no TRUNCATE, no trigger firing as the standby applies a change
    (``trusted``), and either published by key, or published (``inserted``) and taking
    inserts only, by settled counters. Every committed change before that position was
    applied: an apply error holds the confirmed position back. An UPDATE, DELETE or TRUNCATE
    on a table published for inserts only, a write to an unlogged table, REPLICA IDENTITY
    FULL (a row matched by equal values; equal is not identical) are never trusted.
    Counters that count more (aborted rows, a commit before the snapshot counted late) cost
    time, never a row."""
    backup = ctx.journal.get(ctx.run_id, BACKUP)
    if backup is None:
        raise _FallBack("no backup was recorded")
    # Read before the counters: a session that wrote since the target and left since has
    # reported its counters as it left; one still there is seen here.
    quiet = follow.quiet_since(production, applied.clock)
    settled = follow.quiet_since(production, applied.clock, follow.STATS_IDLE_SECONDS)
    now = write_counters(production)
    before, files = backup["writes"], facts.get("files", {})
    if LARGE_OBJECTS in before["tables"] and \
            now["tables"].get(LARGE_OBJECTS) != before["tables"][LARGE_OBJECTS]:
        raise _FallBack("large objects were written since the backup's snapshot (no"
                        " subscription replays them)")
    renewed = {name for name, node in follow.files(production).items()
               if files.get(name) != node}
    tables = pg.user_tables(production)
    sizes = relation_sizes(production, tables)
    written = [t for t in tables if t.qualified in renewed or
               now["tables"].get(t.qualified, 0) != before["tables"].get(t.qualified, 0) or
               (t.qualified not in by_key and
                (not settled or sizes.get(t.oid, 0) < SMALL_BYTES))]

    def replayed(table: pg.Table) -> bool:
        name = table.qualified
        if not (trusted and quiet) or sizes.get(table.oid, 0) < SMALL_BYTES or \
                name in renewed or \
                now["tables"].get(name, 0) != applied.counters["tables"].get(name, 0):
            return False
        inserts_only = settled and "rewritten" in before and \
            now["rewritten"].get(name, 0) == before["rewritten"].get(name, 0)
        return name in by_key or (inserts_only and name in inserted)

    if not (trusted and quiet and settled):
        ctx.log.info("follow_checks_everything_written", trigger_on_standby=not trusted,
                     written_after_the_target=not quiet, counters_settled=settled)
    return [t for t in written if not replayed(t)], [t for t in written if replayed(t)]


def _compare(ctx: Context, standby: str, tables: list[pg.Table]) -> list[str]:
    """``tables`` equal on both sides (rows and checksums, both sides at once), or a
    fall-back naming those that differ."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        sides = [pool.submit(describe, ctx, db, tables)
                 for db in (ctx.target, ctx.target.on(standby))]
        here, there = (side.result() for side in sides)
    if wrong := sorted(t for t in here if here[t] != there.get(t)):
        raise _FallBack(f"the standby differs from production in {', '.join(wrong[:5])}"
                        " (an UPDATE, DELETE or TRUNCATE on a table without a replica"
                        " identity, a write to an unlogged table, or one after the banner's"
                        " position is not replicated)")
    return sorted(here)


def stop(ctx: Context) -> list[str]:
    """Drop whatever of this run's subscription, slot and publications exists, wherever it
    is (the standby may hold production's name after a swap); what was dropped, in words.
    Entered again, it finds what is left."""
    dropped: list[str] = []
    names = follow.names(ctx.run_id)
    with ctx.maintenance(ctx.target) as conn:
        where = follow.subscription_database(conn, ctx.run_id)
        found = [d for d in _databases(ctx) if databases.exists(conn, d)]
    if where is not None:
        with ctx.connect(ctx.target.on(where)) as copy:
            if follow.unsubscribe(copy, ctx.run_id):
                dropped.append(f"subscription {names.subscription} on {where}")
        crash.point("pg.follow.unsubscribed")
    with ctx.maintenance(ctx.target) as conn:
        if follow.drop_slot(conn, names.slot):
            dropped.append(f"slot {names.slot}")
            crash.point("pg.follow.slot_dropped")
    for dbname in found:
        with suppress(PhaseFailed), ctx.connect(ctx.target.on(dbname)) as conn:
            dropped += [f"publication {p} on {dbname}"
                        for p in follow.drop_publications(conn, ctx.run_id)]
    if dropped:
        ctx.log.info("follow_dropped", dropped=dropped)
    return dropped


def _databases(ctx: Context) -> list[str]:
    """Where this run's publications may be: production, and after a swap the database it
    was kept as."""
    name = ctx.target.dbname
    return [name, suffixed(name, f"_failed_{ctx.run_id}")]


def finish(ctx: Context) -> None:
    """Every end: nothing of this run is left on the server."""
    facts = ctx.journal.get(ctx.run_id, FOLLOW)
    if facts is None or facts.get("mode") != "follow":
        return
    if facts.get("state") in FOLLOW_LIVE:  # later states dropped everything already
        stop(ctx)
        facts.update(FollowFacts(state="fell_back",
                                 reason=facts.get("reason", "the window ended first")))
        _put(ctx, facts)


def rolling_back(ctx: Context) -> bool:
    """Before a rollback: a standby still following catches up first (production's every
    write kept); whatever is left is dropped. Whether nothing is lost."""
    facts = ctx.journal.get(ctx.run_id, FOLLOW)
    if facts is None or facts.get("mode") != "follow":
        return False
    if facts.get("state") == "following":
        catch_up(ctx)
    elif facts.get("state") in FOLLOW_LIVE:  # a production closed by a swap is never asked
        stop(ctx)
    facts = ctx.journal.get(ctx.run_id, FOLLOW) or FollowFacts()
    return facts.get("state") == "caught_up"
