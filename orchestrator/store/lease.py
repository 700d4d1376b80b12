"""The lease: the one runner allowed to act on a shared (S3) state.

``lease.json`` names the holder, host, pid, command, fencing token and expiry. It is created
with ``If-None-Match: *`` and renewed with ``If-Match`` every ``lease_ttl / 6`` by a thread. A
lease not renewed for ``lease_ttl`` is expired: any machine's ``window resume`` or ``abort``
may take it, with the next fencing token. ``window unlock`` breaks a live-looking one, and the
break is recorded under ``unlocks/``. ``abort.json`` is a ``window abort`` from another
machine, seen by the holder at its next renewal.

Expiry is judged on each machine's clock: keep clocks in sync (NTP), as any lease needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import GateRefused, LeaseLost
from orchestrator.store.blobs import Conflict, Store, logger, store_for

if TYPE_CHECKING:
    from orchestrator.config import Settings

LEASE = "lease.json"
ABORT = "abort.json"
RENEWALS_PER_TTL = 6
BREAK_ATTEMPTS = 5  # `window unlock` reads a lease renewed meanwhile again, this many times


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
    """This process's lease on the shared state, renewed by a thread until released.

    ``clock`` is the wall clock its expiry is judged and stamped by (``time.time``; a test
    passes one it moves by hand); the renewal thread's interval is real time."""

    def __init__(self, store: Store, ttl: float, command: str, holder: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.holder = holder
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
        now = self.clock()
        previous = LeaseInfo.parse(current.data) if current else None
        if previous is not None and previous.live(now):
            return previous
        info = LeaseInfo(token=(previous.token if previous else 0) + 1, holder=self.holder,
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
        logger().info("lease_acquired", token=info.token,
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
        if self._lost is None and self.info is not None and self.clock() >= self.info.expires_at:
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
                logger().error("lease_lost", reason=why, token=self.token)
        self._stop.set()

    def _renew_until_stopped(self) -> None:
        interval = self.ttl / RENEWALS_PER_TTL
        while not self._stop.wait(interval):
            self.renew()

    def renew(self) -> None:
        info = self.info
        if info is None or self._lost is not None:
            return
        now = self.clock()
        renewed = LeaseInfo(**{**info.__dict__, "renewed_at": now, "expires_at": now + self.ttl})
        try:
            self._etag = self.store.put(LEASE, renewed.dump(), if_match=self._etag)
        except Conflict:
            taken = self.store.get(LEASE)
            self.lose(_taken_by(LeaseInfo.parse(taken.data) if taken else None))
            return
        except GateRefused as exc:  # unreachable: try again until it expires
            logger().warning("lease_not_renewed", error=exc.message)
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
        done = LeaseInfo(**{**info.__dict__, "released": True, "expires_at": self.clock()})
        with contextlib.suppress(Conflict, GateRefused):
            self.store.put(LEASE, done.dump(), if_match=self._etag)
            logger().info("lease_released", token=info.token)
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


def break_lease(store: Store, by: str, token: int) -> LeaseInfo:
    """``window unlock``: end the lease ``token`` (the one the operator confirmed breaking);
    its holder finds out at its next renewal and stops. The break is recorded under
    ``unlocks/``. A renewal between reading and breaking is read again; a lease another
    holder took meanwhile is left alone."""
    blob = store.get(LEASE)
    for _ in range(BREAK_ATTEMPTS):
        if blob is None:
            raise GateRefused("the window's lease is gone already: nothing to unlock.")
        lease = LeaseInfo.parse(blob.data)
        if lease.token != token:
            raise GateRefused(f"{_taken_by(lease)} meanwhile: run `window status` and try"
                              " again.")
        now = time.time()
        try:
            store.put(LEASE, LeaseInfo(**{**lease.__dict__, "expires_at": now,
                                          "broken_by": by}).dump(), if_match=blob.etag)
        except Conflict:
            blob = store.get(LEASE)  # renewed meanwhile: break it as renewed
            continue
        break
    else:
        raise GateRefused(f"the lease was renewed each of {BREAK_ATTEMPTS} times it was broken:"
                          " run `window status` and try again.")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    store.put(f"unlocks/{stamp}-{lease.token}.json",
              json.dumps({"at": now, "by": by, "lease": lease.__dict__}).encode())
    return lease
