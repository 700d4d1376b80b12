"""Where a window's state lives, and who may drive it.

``[state] backend = "local"``: the journal is the state folder's SQLite file and an ``flock``
on the folder says which process drives the window (the kernel drops it with the process).

``[state] backend = "s3"``: the state outlives the machine, the way Terraform's S3 backend
keeps state and lock. Under ``uri``:

- ``lease.json``: the one runner allowed to act (holder, host, pid, fencing token, expiry),
  created with ``If-None-Match: *`` and renewed with ``If-Match`` every ``lease_ttl / 6``. A
  lease not renewed for ``lease_ttl`` is expired: any machine's ``window resume`` or ``abort``
  may take it, with the next fencing token. ``window unlock`` breaks a live-looking one.
- ``journal.sqlite``: the journal, uploaded whole after every committed write, with
  ``If-Match`` on the version this runner last wrote and its fencing token in the object's
  metadata. A runner whose lease was taken can therefore never overwrite the new holder's
  journal: its write is refused, and it stops. The state folder's copy is only a cache,
  replaced from S3 when a runner takes the lease.
- ``abort.json``: a ``window abort`` from another machine, seen by the holder at its next
  renewal; ``unlocks/``: a record of every broken lease; ``audit/<host>.jsonl``: each
  machine's audit log; ``backups/`` and ``reports/``: the archives and reports, so that a
  window resumed on a new machine can roll back and be reported.

Expiry is judged on each machine's clock: keep clocks in sync (NTP), as any lease needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import Busy, GateRefused, LeaseLost, PhaseError
from orchestrator.journal import Journal, Run

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from orchestrator.config import Settings

LEASE = "lease.json"
JOURNAL = "journal.sqlite"
ABORT = "abort.json"
RENEWALS_PER_TTL = 6
PUSH_RETRY_SECONDS = 1.0
_CONFLICTS = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"404", "NoSuchKey", "NotFound"}


class Conflict(Exception):
    """A conditional write found the object other than the writer expected."""


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str


class Store(Protocol):
    """Small objects with compare-and-swap: the state's lease, journal and records."""

    def get(self, key: str) -> Blob | None: ...

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str: ...

    def delete(self, key: str) -> None: ...

    def where(self, key: str) -> str: ...


class LocalStore:
    """Files under a folder; the compare-and-swap is made atomic by an ``flock``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Blob | None:
        try:
            data = (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        return Blob(data, _digest(data))

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            current = self.get(key)
            if (if_none_match and current is not None) or \
                    (if_match is not None and (current is None or current.etag != if_match)):
                raise Conflict(key)
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(path)
        return _digest(data)

    def delete(self, key: str) -> None:
        with self._locked():
            (self.root / key).unlink(missing_ok=True)

    def where(self, key: str) -> str:
        return str(self.root / key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".store.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class S3Store:
    """Objects under ``s3://bucket/prefix`` with S3's conditional writes."""

    def __init__(self, uri: str, client: S3Client | None = None) -> None:
        from orchestrator import s3store  # boto3 only when S3 is used

        self.bucket, self.prefix = s3store.parse_s3_uri(uri)
        self._s3 = client or s3store.make_client()

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def get(self, key: str) -> Blob | None:
        from botocore.exceptions import ClientError

        with _boundary(f"reading {self.where(key)}"):
            try:
                answer = self._s3.get_object(Bucket=self.bucket, Key=self.key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            return Blob(answer["Body"].read(), answer["ETag"])

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str:
        from botocore.exceptions import ClientError

        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions["IfMatch"] = if_match
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        with _boundary(f"writing {self.where(key)}"):
            try:
                answer = self._s3.put_object(Bucket=self.bucket, Key=self.key(key), Body=data,
                                             Metadata=meta or {}, **conditions)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                    raise Conflict(key) from exc
                raise
            return answer["ETag"]

    def delete(self, key: str) -> None:
        with _boundary(f"deleting {self.where(key)}"):
            self._s3.delete_object(Bucket=self.bucket, Key=self.key(key))

    def upload_file(self, key: str, path: Path) -> None:
        with _boundary(f"writing {self.where(key)}"):
            self._s3.upload_file(str(path), self.bucket, self.key(key))


def store_for(settings: Settings) -> Store:
    """The state's store: the state folder, or the S3 prefix."""
    if settings.state.backend == "s3":
        return S3Store(str(settings.state.uri))
    return LocalStore(settings.state_dir)


@contextlib.contextmanager
def _boundary(doing: str) -> Iterator[None]:
    """S3's errors as one sentence; the shared state being out of reach is a refusal (3)."""
    from orchestrator import aws

    try:
        with aws.boundary(doing):
            yield
    except PhaseError as exc:
        raise GateRefused(f"the shared state cannot be reached: {exc.message}") from exc


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# the lease --------------------------------------------------------------------------------


def _log() -> Any:
    """The logger, loaded on first use: reading a local state (`window status`) needs none."""
    import structlog

    return structlog.get_logger()


def _who() -> str:
    from orchestrator import gates

    return gates.who()


@dataclass(frozen=True)
class LeaseInfo:
    token: int
    holder: str
    host: str
    pid: int
    command: str
    acquired_at: float
    renewed_at: float
    expires_at: float
    released: bool = False
    broken_by: str | None = None

    @classmethod
    def parse(cls, data: bytes) -> LeaseInfo:
        return cls(**json.loads(data))

    def dump(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    def live(self, now: float | None = None) -> bool:
        return not self.released and self.expires_at > (now or time.time())

    def describe(self, now: float | None = None) -> str:
        now = now or time.time()
        return (f"{self.holder} on {self.host} (pid {self.pid}, `window {self.command}`,"
                f" fencing token {self.token}), renewed {now - self.renewed_at:.0f} s ago,"
                f" expires in {max(0.0, self.expires_at - now):.0f} s")

    def as_status(self, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        return {"holder": self.holder, "host": self.host, "pid": self.pid,
                "command": self.command, "token": self.token, "live": self.live(now),
                "expires_in_s": round(max(0.0, self.expires_at - now), 1)}


class Lease:
    """This process's lease on the shared state, renewed by a thread until released."""

    def __init__(self, store: Store, ttl: float, command: str) -> None:
        self.store = store
        self.ttl = ttl
        self.command = command
        self.info: LeaseInfo | None = None
        self.took_over = False  # from a holder that never released it (expired or broken)
        self.abort_for: str | None = None
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def token(self) -> int:
        return self.info.token if self.info else 0

    def try_acquire(self) -> LeaseInfo | None:
        """Take the lease if no live runner holds it; else the holder's lease."""
        current = self.store.get(LEASE)
        now = time.time()
        previous = LeaseInfo.parse(current.data) if current else None
        if previous is not None and previous.live(now):
            return previous
        info = LeaseInfo(token=(previous.token if previous else 0) + 1, holder=_who(),
                         host=socket.gethostname(), pid=os.getpid(), command=self.command,
                         acquired_at=now, renewed_at=now, expires_at=now + self.ttl)
        try:
            self._etag = self.store.put(LEASE, info.dump(),
                                        if_match=current.etag if current else None,
                                        if_none_match=current is None)
        except Conflict:  # another runner took it in the same instant
            again = self.store.get(LEASE)
            return LeaseInfo.parse(again.data) if again else previous
        self.info = info
        self.took_over = previous is not None and not previous.released
        _log().info("lease_acquired", token=info.token,
                                    where=self.store.where(LEASE),
                                    taken_over=previous.token if self.took_over and previous
                                    else None)
        self._thread = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                        name="window-lease")
        self._thread.start()
        return None

    def check(self) -> None:
        """Raise ``LeaseLost`` once the lease is gone: a renewal refused, or not renewed in
        time (this process was paused or cut off)."""
        if self._lost is None and self.info is not None and time.time() >= self.info.expires_at:
            self.lose("it expired before it could be renewed (this process was paused or"
                       " cut off from the shared state)")
        if self._lost is not None:
            raise LeaseLost(f"this runner lost the window's lease: {self._lost}; another"
                            " runner may drive the window now, so this one stopped without"
                            " writing to the shared state (`window status` shows where it"
                            " stands).")

    def lose(self, why: str) -> None:
        with self._lock:
            if self._lost is None:
                self._lost = why
                _log().error("lease_lost", reason=why, token=self.token)
        self._stop.set()

    def _renew_until_stopped(self) -> None:
        interval = self.ttl / RENEWALS_PER_TTL
        while not self._stop.wait(interval):
            self.renew()

    def renew(self) -> None:
        info = self.info
        if info is None or self._lost is not None:
            return
        now = time.time()
        renewed = LeaseInfo(**{**info.__dict__, "renewed_at": now, "expires_at": now + self.ttl})
        try:
            self._etag = self.store.put(LEASE, renewed.dump(), if_match=self._etag)
        except Conflict:
            taken = self.store.get(LEASE)
            self.lose(_taken_by(LeaseInfo.parse(taken.data) if taken else None))
            return
        except GateRefused as exc:  # unreachable: try again until it expires
            _log().warning("lease_not_renewed", error=exc.message)
            return
        self.info = renewed
        self._look_for_abort()

    def _look_for_abort(self) -> None:
        with contextlib.suppress(GateRefused, ValueError):
            request = self.store.get(ABORT)
            if request is not None:
                self.abort_for = str(json.loads(request.data).get("run_id"))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.info
        if info is None or self._lost is not None:
            return
        done = LeaseInfo(**{**info.__dict__, "released": True, "expires_at": time.time()})
        with contextlib.suppress(Conflict, GateRefused):
            self.store.put(LEASE, done.dump(), if_match=self._etag)
            _log().info("lease_released", token=info.token)
        self.info = None


def _taken_by(lease: LeaseInfo | None) -> str:
    if lease is None:
        return "the lease was deleted"
    if lease.broken_by:
        return f"the lease was broken by {lease.broken_by}"
    return f"the lease was taken by {lease.holder} on {lease.host} (token {lease.token})"


def current_lease(settings: Settings) -> LeaseInfo | None:
    if settings.state.backend != "s3":
        return None
    blob = store_for(settings).get(LEASE)
    return LeaseInfo.parse(blob.data) if blob else None


# the journal's shared copy ------------------------------------------------------------------


class Remote:
    """The journal's copy in the shared state, written after every commit under the lease."""

    def __init__(self, store: Store, lease: Lease) -> None:
        self.store = store
        self.lease = lease
        self._etag: str | None = None
        self._lock = threading.Lock()

    def pull(self, path: Path) -> None:
        """Replace the local cache with the shared journal (if there is one yet)."""
        blob = self.store.get(JOURNAL)
        if blob is None:
            return
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(blob.data)
        partial.replace(path)
        self._etag = blob.etag

    def push(self, db: sqlite3.Connection) -> None:
        """Checkpoint, then act: the shared journal holds this commit before anything else
        happens. Refused if another runner wrote it since (this one lost the lease)."""
        with self._lock:
            while True:
                self.lease.check()  # an outage outlasting the lease ends here: LeaseLost
                try:
                    self._etag = self.store.put(
                        JOURNAL, db.serialize(), if_match=self._etag,
                        if_none_match=self._etag is None,
                        meta={"fencing-token": str(self.lease.token)})
                except Conflict:
                    self.lease.lose("the shared journal was written by another runner")
                except GateRefused as exc:  # S3 out of reach: nothing acts until it answers
                    _log().warning("journal_not_shared", error=exc.message)
                    time.sleep(PUSH_RETRY_SECONDS)
                else:
                    return

    def abort_requested(self, run_id: str) -> bool:
        return self.lease.abort_for == run_id


# holding a window -----------------------------------------------------------------------------


class Hold:
    """This process drives the window: the state folder's lock and, with S3, the lease."""

    def __init__(self, settings: Settings, command: str) -> None:
        from orchestrator.lock import StateLock  # psycopg: not for a status

        self.settings = settings
        self.lock = StateLock(settings.state_dir)
        self.lease: Lease | None = None
        self.remote: Remote | None = None
        if settings.state.backend == "s3":
            store = store_for(settings)
            self.lease = Lease(store, settings.state.lease_ttl, command)
            self.remote = Remote(store, self.lease)

    def try_acquire(self) -> bool:
        return self._acquire() is None

    def acquire(self) -> None:
        if refusal := self._acquire():
            raise Busy(refusal)

    def _acquire(self) -> str | None:
        """None once held; else why not, as a sentence."""
        if not self.lock.try_acquire():
            return (f"another window is running from {self.settings.state_dir} (pid"
                    f" {self.lock.holder()}); use `window status` to follow it or `window"
                    " abort` to stop it.")
        if self.lease is None:
            return None
        try:
            holder = self.lease.try_acquire()
        except BaseException:
            self.lock.release()
            raise
        if holder is None:
            return None
        self.lock.release()
        return (f"another runner holds this window's lease: {holder.describe()}; once it"
                " expires `window resume` takes over, or `window unlock` breaks it now.")

    def open_journal(self) -> Journal:
        path = self.settings.state_dir / "journal.sqlite"
        if self.remote is not None:
            self.remote.pull(path)
        journal = Journal(path)
        journal.remote = self.remote
        return journal

    def check(self) -> None:
        """LeaseLost once the lease is gone (the state folder's lock cannot be lost)."""
        if self.lease is not None:
            self.lease.check()

    @property
    def took_over(self) -> bool:
        """The lease was taken from a runner that never released it: that runner may still
        hold the target's lock, through a session this process should end."""
        return self.lease is not None and self.lease.took_over

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        self.lock.release()


def request_abort(settings: Settings, run_id: str) -> None:
    """Ask the process driving ``run_id`` to roll back: through the local journal, or with
    S3 through ``abort.json``, which the holder reads at its next renewal."""
    if settings.state.backend != "s3":
        with Journal.open(settings.state_dir) as journal:
            journal.request_abort(run_id)
        return
    store_for(settings).put(ABORT, json.dumps({"run_id": run_id, "by": _who(),
                                               "host": socket.gethostname(),
                                               "at": time.time()}).encode())


def reader(settings: Settings) -> Journal | None:
    """The window's journal to read (never to write), or None if no window ran: the state
    folder's, or a fresh copy of the shared one."""
    if settings.state.backend != "s3":
        return Journal.existing(settings.state_dir)
    blob = store_for(settings).get(JOURNAL)
    return Journal.from_bytes(blob.data) if blob else None


def latest_tagged_run(settings: Settings, fleet_run: str) -> Run | None:
    """The newest run of this (target-scoped) state tagged with ``fleet_run``."""
    journal = reader(settings)
    if journal is None:
        return None
    try:
        return journal.tagged_run(fleet_run)
    finally:
        journal.close()


def break_lease(settings: Settings) -> LeaseInfo:
    """``window unlock``: end the current lease, whoever holds it; its holder finds out at its
    next renewal and stops. The break is recorded under ``unlocks/``."""
    store = store_for(settings)
    blob = store.get(LEASE)
    if blob is None:
        raise GateRefused("the window's lease is gone already: nothing to unlock.")
    lease = LeaseInfo.parse(blob.data)
    now = time.time()
    by = f"{_who()} on {socket.gethostname()} (`window unlock`)"
    try:
        store.put(LEASE, LeaseInfo(**{**lease.__dict__, "expires_at": now, "broken_by": by})
                  .dump(), if_match=blob.etag)
    except Conflict as exc:
        raise GateRefused("the lease changed while breaking it (renewed or taken): run"
                          " `window status` and try again.") from exc
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    store.put(f"unlocks/{stamp}-{lease.token}.json",
              json.dumps({"at": now, "by": by, "lease": lease.__dict__}).encode())
    return lease


def shelve_audit(settings: Settings) -> None:
    """This machine's audit log, copied beside the shared journal."""
    folder = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:8]
    shelve(settings, f"audit/{socket.gethostname()}-{folder}.jsonl",
           settings.state_dir / "audit.jsonl")


def shelve(settings: Settings, key: str, path: Path) -> None:
    """Copy a file (a report, the audit log) into the shared state, if it is S3; a copy that
    cannot be made is a warning, never a different outcome."""
    if settings.state.backend != "s3" or not path.is_file():
        return
    try:
        S3Store(str(settings.state.uri)).upload_file(key, path)
    except GateRefused as exc:
        _log().warning("not_shelved", key=key, error=exc.message)
