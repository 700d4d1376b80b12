"""The journal's copy in the shared state: ``journal.sqlite`` under the S3 prefix.

It is uploaded whole after every committed write, with ``If-Match`` on the version this
runner last wrote and its fencing token in the object's metadata. A runner whose lease was
taken can therefore never overwrite the new holder's journal: its write is refused, and it
stops. The state folder's copy is only a cache, replaced from S3 when a runner takes the lease.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from orchestrator.errors import GateRefused
from orchestrator.store.blobs import Conflict, Store, logger
from orchestrator.store.lease import Lease

JOURNAL = "journal.sqlite"
PUSH_RETRY_SECONDS = 1.0


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
                    logger().warning("journal_not_shared", error=exc.message)
                    time.sleep(PUSH_RETRY_SECONDS)
                else:
                    return

    def abort_requested(self, run_id: str) -> bool:
        return self.lease.abort_for == run_id
