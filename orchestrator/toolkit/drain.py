"""Drain production once the banner is up, before the migration takes its locks.

A request that slipped in before the banner may still be running, or a session may sit idle
in a transaction holding locks; the migration would queue behind it (and everyone behind the
migration). Drain waits, bounded by ``[migrate] drain_timeout``, until no application session
is busy on production; idle pool connections hold no locks and are not waited for unless
``drain_idle``. With ``terminate_idle_in_transaction`` the sessions idle in a transaction are
ended at once. What was waited for and what was ended goes into the journal. A drain that
runs out of time does not stop the window: the migration's ``lock_timeout`` still bounds it.
It never takes more than half of the migrate phase.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import psycopg

from orchestrator.engine.context import Context
from orchestrator.engine.facts import DRAIN
from orchestrator.postgres import pg
from orchestrator.redact import redact_value

POLL_SECONDS = 0.25
WINDOW_APPS = "window/*"  # the window's own commands' sessions


def drain(ctx: Context, db: pg.Db) -> dict[str, Any]:
    settings = ctx.settings.migrate
    started = time.monotonic()
    # Half the phase at most: the migration itself must keep the time it was given.
    deadline = time.time() + min(settings.drain_timeout, ctx.remaining() / 2)
    waited: dict[int, dict[str, Any]] = {}
    ended: list[dict[str, Any]] = []
    with ctx.connect(db) as conn:
        while True:
            found = [s for s in pg.sessions(conn, db.dbname) if not _ignored(ctx, s)]
            unseen = [s for s in found if not s.state]
            busy = [s for s in found if s.state and (settings.drain_idle or s.state != "idle")]
            if settings.terminate_idle_in_transaction:
                for session in [s for s in busy if s.state.startswith("idle in transaction")]:
                    if session.may_end and _terminate(conn, session.pid):
                        ended.append(_describe(session))
                        busy.remove(session)
            for session in busy:
                waited.setdefault(session.pid, _describe(session))
            if not busy or time.time() >= deadline:
                break
            ctx.poll()
            time.sleep(POLL_SECONDS)
    result: dict[str, Any] = redact_value({
        "waited_s": round(time.monotonic() - started, 3), "waited_for": list(waited.values()),
        "ended": ended, "remaining": [_describe(s) for s in busy], "drained": not busy,
        "unseen": [_describe(s) for s in unseen]})
    ctx.journal.put(ctx.run_id, DRAIN, result)
    if unseen:
        ctx.log.warning("drain_cannot_see", sessions=len(unseen),
                        reason="other roles' sessions are hidden from this role (grant it"
                               " pg_read_all_stats): the drain cannot tell if they are busy")
    if busy:
        ctx.log.warning("drain_timed_out", remaining=result["remaining"],
                        waited_s=result["waited_s"])
    else:
        ctx.log.info("drained", waited_s=result["waited_s"], waited_for=len(waited),
                     ended=len(ended))
    return result


def _ignored(ctx: Context, session: pg.Session) -> bool:
    return any(fnmatch.fnmatchcase(session.application_name, pattern)
               for pattern in (WINDOW_APPS, *ctx.settings.migrate.drain_ignore))


def _terminate(conn: psycopg.Connection[Any], pid: int) -> bool:
    try:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return False
    return bool(row and row[0])


def _describe(session: pg.Session) -> dict[str, Any]:
    return {"pid": session.pid, "application_name": session.application_name,
            "user": session.user, "state": session.state,
            "seconds": round(session.seconds, 1)}
