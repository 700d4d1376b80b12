"""Live samples of the target server's sessions while production is migrated or restored.

During a migration the engineer's question is "is it working, or stuck behind something?":
how many sessions, how many running, who waits on whose lock, how long the longest statement
has run. A daemon thread answers it every few seconds from ``pg_stat_activity`` and
``pg_locks``, logs each answer (the console shows it live, the audit trail keeps it) and
journals it for ``window status``. Watching must never hurt the window: every failure is one
warning and sampling carries on (or quietly stops); the phase never waits on it for long.
Query text is never read: it can hold personal data or secrets.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestrator.engine.context import Context
from orchestrator.engine.journal import Journal
from orchestrator.errors import WindowError
from orchestrator.postgres import pg

BLOCKED_LIMIT = 10  # blocked sessions kept per sample, longest waiting first
STATEMENT_TIMEOUT_MS = 2000  # a sample that takes longer is itself a burden: give it up
JOIN_SECONDS = 3.0  # at most this long after the phase for the final sample
HEARTBEAT_SECONDS = 60.0  # a monitor line at least this often, changed or not

SESSIONS = """
SELECT a.pid, coalesce(a.state, 'unknown') AS state, a.application_name,
       extract(epoch FROM now() - a.query_start)::float8 AS running_s,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by
  FROM pg_stat_activity a
 WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""
# pg_blocking_pids takes the lock manager's locks: it runs only for sessions waiting on one.
# waitstart exists from PostgreSQL 14 on; read through jsonb, an older server gives NULL.
LOCK_WAITS = """
SELECT l.pid, count(*) AS locks,
       extract(epoch FROM now() - min((to_jsonb(l) ->> 'waitstart')::timestamptz))::float8
         AS waiting_s
  FROM pg_locks l WHERE NOT l.granted GROUP BY l.pid
"""


def measure(conn: psycopg.Connection[Any], phase: str) -> dict[str, Any]:
    """One sample: the server's client sessions (but this one) and its ungranted locks."""
    with conn.cursor(row_factory=dict_row) as cursor:
        sessions = cursor.execute(SESSIONS).fetchall()
        waits = {row["pid"]: row for row in cursor.execute(LOCK_WAITS).fetchall()}
    active = [s for s in sessions if s["state"] == "active"]
    blocked = sorted((_blocked(s, waits.get(s["pid"])) for s in sessions if s["blocked_by"]),
                     key=lambda b: -b["waiting_s"])
    return {
        "at": time.time(),
        "phase": phase,
        "connections": len(sessions),
        "by_state": dict(Counter(s["state"] for s in sessions)),
        "active": len(active),
        "waiting": len(blocked),
        "blocked": blocked[:BLOCKED_LIMIT],
        "longest_s": max(0.0, round(max((s["running_s"] or 0.0 for s in active),
                                        default=0.0), 2)),
        "ungranted_locks": sum(int(w["locks"]) for w in waits.values()),
    }


def _blocked(session: dict[str, Any], wait: dict[str, Any] | None) -> dict[str, Any]:
    # waitstart can be NULL for a moment after the wait began: the statement's age bounds it.
    waited = (wait or {}).get("waiting_s") or session["running_s"] or 0.0
    return {"pid": session["pid"], "blocked_by": sorted(session["blocked_by"]),
            "application_name": session["application_name"], "waiting_s": round(waited, 2)}


class Sampler:
    """Samples on its own thread: at once, every ``interval`` seconds, and once at the end."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.db = ctx.target.on(ctx.settings.target.maintenance_db)
        self.interval = ctx.settings.monitor.interval
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._warned = False
        self._shown: tuple[object, ...] | None = None
        self._shown_at = 0.0
        # The thread sees the run's bound log context (run id, who, where) as the phase does.
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._run,), name=f"monitor-{ctx.phase}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take the final sample and wait for it, briefly: a stuck server must not hold the
        window (the daemon thread then ends by itself)."""
        self._stop.set()
        self._thread.join(JOIN_SECONDS)

    def _run(self) -> None:
        try:
            # SQLite connections stay in the thread that opened them: this one is the thread's.
            journal = Journal(self.ctx.journal.path)
        except Exception as exc:
            self._failed(exc)
            return
        try:
            self._take(journal)
            while not self._stop.wait(self.interval):
                self._take(journal)
            self._take(journal)
        finally:
            self._disconnect()
            journal.close()

    def _take(self, journal: Journal) -> None:
        try:
            sample = measure(self._connection(), self.ctx.phase)
            self._show(sample)
            journal.add_sample(self.ctx.run_id, sample.pop("phase"), sample.pop("at"), sample)
        except Exception as exc:
            self._disconnect()  # the next tick reconnects
            self._failed(exc)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            # A deadline of now: one attempt (libpq's connect_timeout bounds it), as the next
            # tick is the retry.
            conn = pg.connect(self.db, time.time())
            conn.execute("SELECT set_config('application_name', %s, false),"
                         " set_config('statement_timeout', %s, false)",
                         (f"window/{self.ctx.run_id}/monitor", str(STATEMENT_TIMEOUT_MS)))
            self._conn = conn
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:
                self._failed(exc)

    def _show(self, sample: dict[str, Any]) -> None:
        """A line when the picture changes (sessions, running, waiting, who blocks whom),
        and at least every ``HEARTBEAT_SECONDS``: not one every tick, the same each time.
        The journal keeps every sample (the live panel and the report read them)."""
        blockers = sorted({pid for b in sample["blocked"] for pid in b["blocked_by"]})
        picture = (sample["connections"], sample["active"], sample["waiting"], *blockers)
        if picture == self._shown and time.monotonic() - self._shown_at < HEARTBEAT_SECONDS:
            return
        self._shown, self._shown_at = picture, time.monotonic()
        self.ctx.log.info("monitor", connections=sample["connections"],
                          active=sample["active"], waiting=sample["waiting"],
                          longest_s=sample["longest_s"],
                          **({"blocked_by": blockers} if blockers else {}))

    def _failed(self, exc: Exception) -> None:
        """One warning per phase: a server that cannot be watched says so once, not every
        few seconds."""
        if self._warned:
            return
        self._warned = True
        self.ctx.log.warning("monitor_failed", error=_describe(exc), db=str(self.db))


def _describe(exc: Exception) -> str:
    if isinstance(exc, WindowError):
        return exc.message
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextmanager
def sampling(ctx: Context) -> Iterator[None]:
    """Sample the target server for as long as the block runs."""
    sampler = Sampler(ctx)
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
