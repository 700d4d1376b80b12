"""The journal: a SQLite file (WAL) that makes every window resumable.

Checkpoint, then act: each write below is its own committed transaction, made before the
step it describes acts on the world, so a kill -9 at any instant leaves a journal that says
exactly what happened. Deadlines are stored as absolute Unix times. Every text that came from
outside (command output, error messages) is redacted before it is written.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from orchestrator import crash
from orchestrator.engine.facts import Fact, T
from orchestrator.engine.rows import Child, PhaseRow, PhaseStatus, Run
from orchestrator.redact import redact, redact_value

OUTPUT_LIMIT = 64 * 1024  # of each command's output, kept after redaction
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, state TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0, pid INTEGER, pid_start TEXT,
    user TEXT, host TEXT, git_commit TEXT, target TEXT, staging TEXT,
    abort_requested_at REAL, exit_code INTEGER, finished_at REAL,
    backup_when TEXT NOT NULL DEFAULT 'before_banner'
);
CREATE TABLE IF NOT EXISTS phases (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    started_at REAL, finished_at REAL, deadline REAL, timeout_s REAL,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, at REAL NOT NULL,
    kind TEXT NOT NULL, phase TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS children (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, phase TEXT NOT NULL, label TEXT NOT NULL,
    pid INTEGER NOT NULL, pgid INTEGER NOT NULL, start_ticks TEXT,
    started_at REAL NOT NULL, ended_at REAL, exit_code INTEGER, output TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, at REAL NOT NULL, phase TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rehearsals (
    id TEXT PRIMARY KEY, at REAL NOT NULL, fingerprint TEXT, target TEXT, staging TEXT,
    succeeded INTEGER NOT NULL, facts TEXT NOT NULL, error TEXT
);
CREATE TABLE IF NOT EXISTS facts (
    run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""


class RemoteCopy(Protocol):
    """The journal's copy in shared state (orchestrator.store.replica.Remote)."""

    def push(self, db: sqlite3.Connection) -> None: ...

    def abort_requested(self, run_id: str) -> bool: ...


class Held(Protocol):
    """Something this process holds while it drives the window (the state's lease, the
    target's lock): ``check`` raises ``Interrupted`` once it no longer does."""

    def check(self) -> None: ...


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _writes(method: Callable[Concatenate[Journal, _P], _T]
            ) -> Callable[Concatenate[Journal, _P], _T]:
    """A write: once committed here, copied to the shared state (if any) before the caller
    goes on to act."""

    def write(self: Journal, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        result = method(self, *args, **kwargs)
        if self.remote is not None:
            self.remote.push(self._db)
        # A crash point: committed, and nothing of what follows has happened yet. Named by the
        # write and what it is about (the phase, the fact's key) where it says.
        about = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        crash.point(f"journal.{method.__name__.lstrip('_')}.{about}".rstrip("."))
        return result

    functools.update_wrapper(write, method)
    return write


class Journal:
    remote: RemoteCopy | None = None  # with the S3 state backend, while holding the lease
    holds: tuple[Held, ...] = ()  # what the driving process holds, checked as it polls

    def __init__(self, path: Path, data: bytes | None = None) -> None:
        self.path = path
        if data is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        else:  # a copy to read, in memory; its header must not ask for a WAL file
            self._db = sqlite3.connect(":memory:", isolation_level=None)
            self._db.deserialize(data[:18] + b"\x01\x01" + data[20:])
        self._db.row_factory = sqlite3.Row
        self._db.executescript(f"BEGIN;\n{SCHEMA}COMMIT;\n")  # a new journal: one commit, one sync

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "shared state") -> Journal:
        return cls(Path(where), data)

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite")

    @classmethod
    def existing(cls, state_dir: Path) -> Journal | None:
        """The state folder's journal if a window ever ran there; reading never creates one."""
        path = state_dir / "journal.sqlite"
        return cls(path) if path.is_file() else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # runs ---------------------------------------------------------------------------------

    @_writes
    def create_run(self, run_id: str, phases: list[str], info: Mapping[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, created_at, state, user, host, git_commit, target,"
                " staging, backup_when) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, time.time(), phases[0], info.get("user"), info.get("host"),
                 info.get("git_commit"), info.get("target"), info.get("staging"),
                 info.get("backup_when", "before_banner")),
            )
            db.executemany(
                "INSERT INTO phases (run_id, seq, name, status) VALUES (?, ?, ?, ?)",
                [(run_id, seq, name, PhaseStatus.PENDING) for seq, name in enumerate(phases)],
            )

    def run(self, run_id: str) -> Run:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return Run(**{**dict(row), "interrupted": bool(row["interrupted"])})

    def latest_run(self) -> Run | None:
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    def runs(self, limit: int = -1) -> list[Run]:
        """Newest first."""
        rows = self._db.execute(
            "SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self.run(row["run_id"]) for row in rows]

    @_writes
    def claim(self, run_id: str, pid: int, pid_start: str | None) -> None:
        """This process now drives the run (a fresh run, a resume or an abort)."""
        self._db.execute(
            "UPDATE runs SET pid = ?, pid_start = ?, interrupted = 0 WHERE run_id = ?",
            (pid, pid_start, run_id),
        )

    @_writes
    def set_interrupted(self, run_id: str) -> None:
        self._db.execute("UPDATE runs SET interrupted = 1 WHERE run_id = ?", (run_id,))

    @_writes
    def finish(self, run_id: str, exit_code: int) -> None:
        self._db.execute(
            "UPDATE runs SET exit_code = ?, finished_at = ? WHERE run_id = ?",
            (exit_code, time.time(), run_id),
        )

    @_writes
    def request_abort(self, run_id: str) -> None:
        self._db.execute(
            "UPDATE runs SET abort_requested_at = coalesce(abort_requested_at, ?)"
            " WHERE run_id = ?",
            (time.time(), run_id),
        )

    def abort_requested(self, run_id: str) -> bool:
        row = self._db.execute(
            "SELECT abort_requested_at FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is not None and row[0] is not None:
            return True
        if self.remote is not None and self.remote.abort_requested(run_id):
            self.request_abort(run_id)  # asked from another machine: recorded here too
            return True
        return False

    def tagged_run(self, fleet_run: str) -> Run | None:
        """The newest run a fleet started as part of ``fleet_run``."""
        row = self._db.execute(
            "SELECT f.run_id FROM facts f JOIN runs r USING (run_id) WHERE f.key = 'fleet'"
            " AND json_extract(f.value, '$.id') = ? ORDER BY r.created_at DESC LIMIT 1",
            (fleet_run,)).fetchone()
        return self.run(row["run_id"]) if row else None

    # phases -------------------------------------------------------------------------------

    def phases(self, run_id: str) -> list[PhaseRow]:
        rows = self._db.execute(
            "SELECT name, status, started_at, finished_at, deadline, timeout_s, attempts, error"
            " FROM phases WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
        return [PhaseRow(**{**dict(row), "status": PhaseStatus(row["status"])}) for row in rows]

    def phase(self, run_id: str, name: str) -> PhaseRow:
        return next(p for p in self.phases(run_id) if p.name == name)

    @_writes
    def start_phase(self, run_id: str, name: str, deadline: float, timeout_s: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE phases SET status = ?, started_at = coalesce(started_at, ?),"
                " finished_at = NULL, deadline = ?, timeout_s = ?, attempts = attempts + 1,"
                " error = NULL WHERE run_id = ? AND name = ?",
                (PhaseStatus.RUNNING, time.time(), deadline, timeout_s, run_id, name),
            )
            self._event(db, run_id, "phase_started", name, {"deadline": deadline})

    @_writes
    def finish_phase(self, run_id: str, name: str, status: PhaseStatus,
                     error: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE phases SET status = ?, finished_at = ?, error = ?"
                " WHERE run_id = ? AND name = ?",
                (status, time.time(), redact(error) if error else None, run_id, name),
            )
            self._event(db, run_id, f"phase_{status}", name, {"error": error} if error else {})

    @_writes
    def conclude_phase(self, run_id: str, name: str, status: PhaseStatus, error: str | None, *,
                       trigger: str, state: str) -> None:
        """A phase's end and the transition it causes, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "UPDATE phases SET status = ?, finished_at = coalesce(?, finished_at),"
                " error = coalesce(?, error) WHERE run_id = ? AND name = ?",
                (status, None if status == PhaseStatus.SKIPPED else time.time(),
                 redact(error) if error else None, run_id, name),
            )
            self._event(db, run_id, f"phase_{status}", name, {"error": error} if error else {})
            self._transition(db, run_id, name, trigger, state)

    @_writes
    def transition(self, run_id: str, source: str, trigger: str, state: str) -> None:
        with self._transaction() as db:
            self._transition(db, run_id, source, trigger, state)

    def _transition(self, db: sqlite3.Connection, run_id: str, source: str, trigger: str,
                    state: str) -> None:
        db.execute("UPDATE runs SET state = ?, exit_code = NULL, finished_at = NULL"
                   " WHERE run_id = ?", (state, run_id))
        self._event(db, run_id, "transition", source,
                    {"trigger": trigger, "from": source, "to": state})

    @_writes
    def skip_pending(self, run_id: str) -> None:
        self._db.execute(
            "UPDATE phases SET status = ? WHERE run_id = ? AND status = ?",
            (PhaseStatus.SKIPPED, run_id, PhaseStatus.PENDING),
        )

    # events, children, backup -------------------------------------------------------------

    @staticmethod
    def _event(db: sqlite3.Connection, run_id: str, kind: str, phase: str | None,
               detail: Mapping[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (run_id, at, kind, phase, detail) VALUES (?, ?, ?, ?, ?)",
            (run_id, time.time(), kind, phase,
             json.dumps(redact_value(detail), default=str, ensure_ascii=False)),
        )

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT at, kind, phase, detail FROM events WHERE run_id = ?"
            " AND (? IS NULL OR kind = ?) ORDER BY id",
            (run_id, kind, kind),
        ).fetchall()
        return [{**dict(row), "detail": json.loads(row["detail"] or "{}")} for row in rows]

    @_writes
    def child_started(self, run_id: str, phase: str, label: str, *, pid: int, pgid: int,
                      start_ticks: str | None) -> int:
        cursor = self._db.execute(
            "INSERT INTO children (run_id, phase, label, pid, pgid, start_ticks, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, phase, redact(label), pid, pgid, start_ticks, time.time()),
        )
        return int(cursor.lastrowid or 0)

    @_writes
    def child_ended(self, child_id: int, exit_code: int | None, output: str) -> None:
        self._db.execute(
            "UPDATE children SET ended_at = ?, exit_code = ?, output = ? WHERE id = ?",
            (time.time(), exit_code, redact(output)[-OUTPUT_LIMIT:], child_id),
        )

    def live_children(self, run_id: str) -> list[Child]:
        rows = self._db.execute(
            "SELECT id, phase, label, pid, pgid, start_ticks FROM children"
            " WHERE run_id = ? AND ended_at IS NULL",
            (run_id,),
        ).fetchall()
        return [Child(**dict(row)) for row in rows]

    def put(self, run_id: str, fact: Fact[T], value: T) -> None:
        """Record what a phase learned (the backup, the write counters, the rollback), whole,
        replacing what was recorded under ``fact`` before. Facts are figures the window
        computed (paths, checksums, counters), never anyone's output, and rollback reads them
        back: they are stored exactly, not through redaction, which could mangle a path or a
        checksum that happens to contain a short password."""
        self._put(run_id, fact.key, value)

    @_writes
    def _put(self, run_id: str, key: str, value: object) -> None:
        self._db.execute(
            "INSERT INTO facts (run_id, key, value, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, at = excluded.at",
            (run_id, key, json.dumps(value, default=str, ensure_ascii=False), time.time()),
        )

    def get(self, run_id: str, fact: Fact[T]) -> T | None:
        """What was recorded under ``fact``, as it was written (``orchestrator.engine.facts``)."""
        row = self._db.execute("SELECT value FROM facts WHERE run_id = ? AND key = ?",
                               (run_id, fact.key)).fetchone()
        return cast("T", json.loads(row["value"])) if row else None

    # rehearsals ---------------------------------------------------------------------------

    @_writes
    def record_rehearsal(self, rehearsal_id: str, *, fingerprint: str | None, target: str,
                         staging: str, facts: Mapping[str, Any], error: str | None = None
                         ) -> None:
        """A rehearsal's outcome (``window rehearse`` or a window's own staging phase), kept so
        a later ``window run`` of the same migration files may reuse it."""
        self._db.execute(
            "INSERT OR REPLACE INTO rehearsals (id, at, fingerprint, target, staging,"
            " succeeded, facts, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rehearsal_id, time.time(), fingerprint, target, staging, int(error is None),
             json.dumps(facts, default=str, ensure_ascii=False),
             redact(error) if error else None),
        )

    def reusable_rehearsal(self, fingerprint: str, target: str, staging: str, since: float
                           ) -> dict[str, Any] | None:
        """The newest successful rehearsal of exactly these files, for this production and
        staging, no older than ``since``."""
        row = self._db.execute(
            "SELECT id, at, facts FROM rehearsals WHERE succeeded AND fingerprint = ?"
            " AND target = ? AND staging = ? AND at >= ? ORDER BY at DESC LIMIT 1",
            (fingerprint, target, staging, since)).fetchone()
        return {"id": row["id"], "at": row["at"], **json.loads(row["facts"])} if row else None

    # monitor samples ----------------------------------------------------------------------

    def add_sample(self, run_id: str, phase: str, at: float, value: Mapping[str, Any]) -> None:
        """One sample of the server's sessions; its text (application names) is redacted."""
        self._db.execute(
            "INSERT INTO samples (run_id, at, phase, value) VALUES (?, ?, ?, ?)",
            (run_id, at, phase,
             json.dumps(redact_value(value), default=str, ensure_ascii=False)),
        )

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """The run's samples, oldest first, each as ``{"at", "phase", **value}``."""
        rows = self._db.execute(
            "SELECT at, phase, value FROM samples WHERE run_id = ? ORDER BY at, id", (run_id,)
        ).fetchall()
        return [{"at": row["at"], "phase": row["phase"], **json.loads(row["value"])}
                for row in rows]
