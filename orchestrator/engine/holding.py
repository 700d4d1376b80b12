"""Holding a window: this process alone drives it (the state folder's lock and, with the S3
state backend, the lease), and the journal it drives it with.

``[state] backend = "local"``: the journal is the state folder's SQLite file and an ``flock``
on the folder says which process drives the window (the kernel drops it with the process).
``[state] backend = "s3"``: the state outlives the machine (``orchestrator.store``): the
lease names the one runner that may act and the journal is replicated after every write.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.engine.identity import who
from orchestrator.engine.journal import Journal
from orchestrator.engine.rows import Run
from orchestrator.errors import Busy, UsageError
from orchestrator.store.blobs import store_for
from orchestrator.store.lease import ABORT, Lease
from orchestrator.store.replica import JOURNAL, Remote

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.postgres.pg import Db


class Hold:
    """This process drives the window: the state folder's lock and, with S3, the lease."""

    def __init__(self, settings: Settings, command: str) -> None:
        from orchestrator.store.lock import StateLock  # psycopg: not for a status

        self.settings = settings
        self.lock = StateLock(settings.state_dir)
        self.lease: Lease | None = None
        self.remote: Remote | None = None
        if settings.state.backend == "s3":
            store = store_for(settings)
            self.lease = Lease(store, settings.state.lease_ttl, command, who())
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
    store_for(settings).put(ABORT, json.dumps({"run_id": run_id, "by": who(),
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


@contextmanager
def hold_window(settings: Settings, target: Db, command: str, held: Hold | None = None
             ) -> Iterator[Journal]:
    """Gate 4: this process alone drives this state (its folder, and with S3 its lease) and
    this target."""
    hold = held or Hold(settings, command)
    from orchestrator.store.lock import TargetLock  # psycopg: not for a status

    target_lock = TargetLock(target, settings.target.maintenance_db)
    if held is None:
        hold.acquire()
    try:
        target_lock.acquire(time.time() + settings.target.connect_timeout,
                            take_over=hold.took_over)
        journal = hold.open_journal()
        journal.holds = (hold, target_lock)
        try:
            yield journal
        finally:
            journal.close()
            target_lock.release()
    finally:
        hold.release()


def where(settings: Settings) -> str:
    """Where the window's state lives, as a person would look for it."""
    return str(settings.state.uri) if settings.state.backend == "s3" else str(settings.state_dir)


def read(settings: Settings) -> Journal:
    """The window's journal to read; no window ever ran is a usage error."""
    journal = reader(settings)
    if journal is None:
        raise UsageError(f"no window has run from {where(settings)} yet.")
    return journal
