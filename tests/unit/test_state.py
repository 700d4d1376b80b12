"""The lease, the fencing of journal writes and the store's compare-and-swap, on the local store
(the same code runs against S3 in tests/integration/test_state_s3.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.journal import Journal
from orchestrator.errors import ConfigError, GateRefused, LeaseLost
from orchestrator.store import blobs, replica
from orchestrator.store import lease as leases
from tests.support.settings import make_settings
from tests.support.waiting import wait_until


def test_the_store_swaps_only_what_the_writer_saw(tmp_path: Path) -> None:
    store = blobs.LocalStore(tmp_path)
    first = store.put("k", b"1", if_none_match=True)
    with pytest.raises(blobs.Conflict):
        store.put("k", b"2", if_none_match=True)
    second = store.put("k", b"2", if_match=first)
    with pytest.raises(blobs.Conflict):
        store.put("k", b"3", if_match=first)  # a writer that missed the second version
    blob = store.get("k")
    assert blob is not None and (blob.data, blob.etag) == (b"2", second)
    store.delete("k")
    assert store.get("k") is None


class Clock:
    """The wall clock a lease judges expiry by, moved by the test: expiry never depends on
    how fast a loaded machine runs the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stop_renewing(lease: leases.Lease) -> None:
    """The runner vanished: no renewal now, nor one already under way."""
    lease._stop.set()
    assert lease._thread is not None
    lease._thread.join(timeout=5)
    assert not lease._thread.is_alive()


def renewed_at(store: blobs.Store) -> float:
    blob = store.get(leases.LEASE)
    assert blob is not None
    return leases.LeaseInfo.parse(blob.data).renewed_at


def test_a_live_lease_refuses_a_second_runner_and_an_expired_one_passes_on(
        tmp_path: Path) -> None:
    store = blobs.LocalStore(tmp_path)
    clock = Clock()
    first = leases.Lease(store, ttl=0.6, command="run", holder="ops", clock=clock)
    second = leases.Lease(store, ttl=0.6, command="resume", holder="ops", clock=clock)
    try:
        assert first.try_acquire() is None
        holder = second.try_acquire()
        assert holder is not None and holder.token == 1 and holder.live(clock())
        stop_renewing(first)
        clock.advance(0.7)  # past the ttl, not renewed
        assert second.try_acquire() is None
        assert second.token == 2 and second.took_over
        with pytest.raises(LeaseLost, match=r"expired|taken"):
            first.check()
    finally:
        first.release()
        second.release()
    lease = leases.LeaseInfo.parse(store.get(leases.LEASE).data)  # type: ignore[union-attr]
    assert lease.token == 2 and lease.released and not lease.live()


def test_renewal_keeps_a_lease_alive_past_its_ttl(tmp_path: Path) -> None:
    store = blobs.LocalStore(tmp_path)
    clock = Clock()
    lease = leases.Lease(store, ttl=0.6, command="run", holder="ops", clock=clock)
    assert lease.try_acquire() is None
    try:
        for _ in range(2):  # 1.0 s in all, renewed (every 0.1 s of real time) meanwhile
            clock.advance(0.5)
            wait_until(lambda: renewed_at(store) == clock(), "a renewal at the clock's time")
        lease.check()
        other = leases.Lease(store, ttl=0.6, command="run", holder="ops", clock=clock)
        assert other.try_acquire() is not None
    finally:
        lease.release()
    released = leases.Lease(store, ttl=0.6, command="run", holder="ops", clock=clock)
    assert released.try_acquire() is None
    released.release()


def test_a_holder_whose_lease_was_taken_cannot_write_the_journal(tmp_path: Path) -> None:
    store = blobs.LocalStore(tmp_path / "shared")
    old = leases.Lease(store, ttl=60, command="run", holder="ops")
    assert old.try_acquire() is None
    old_journal = Journal(tmp_path / "a" / "journal.sqlite")
    old_journal.remote = replica.Remote(store, old)
    old_journal.create_run("r1", ["preflight"], {})
    written = store.get(replica.JOURNAL)
    assert written is not None

    # Another runner breaks in (as after an expiry) and writes the journal first.
    new = leases.Lease(store, ttl=60, command="resume", holder="ops")
    blob = store.get(leases.LEASE)
    assert blob is not None
    info = leases.LeaseInfo.parse(blob.data)
    store.put(leases.LEASE, leases.LeaseInfo(**{**info.__dict__, "expires_at": 0}).dump(),
              if_match=blob.etag)
    assert new.try_acquire() is None
    remote = replica.Remote(store, new)
    remote.pull(tmp_path / "b" / "journal.sqlite")
    new_journal = Journal(tmp_path / "b" / "journal.sqlite")
    new_journal.remote = remote
    assert new_journal.run("r1").state == "preflight"
    new_journal.claim("r1", 2, None)
    after = store.get(replica.JOURNAL)

    with pytest.raises(LeaseLost):
        old_journal.set_interrupted("r1")
    assert store.get(replica.JOURNAL) == after  # fenced: nothing of the old holder's landed
    with pytest.raises(LeaseLost):
        old.check()
    old._stop.set()
    new.release()



class RenewedAfterReads(blobs.LocalStore):
    """A store whose lease holder renews right after each of the first ``times`` reads of the
    lease: the race `window unlock` meets when a renewal falls between its read and its
    conditional write."""

    def __init__(self, root: Path, times: int) -> None:
        super().__init__(root)
        self.times = times
        self.holder: leases.Lease | None = None

    def get(self, key: str) -> blobs.Blob | None:
        blob = super().get(key)
        holder, self.holder = self.holder, None  # the renewal's own reads renew nothing
        if key == leases.LEASE and holder is not None and self.times > 0:
            self.times -= 1
            holder.renew()
        self.holder = holder
        return blob

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        holder, self.holder = self.holder, None  # the write's read under its lock: no race
        try:
            return super().put(key, data, **kwargs)
        finally:
            self.holder = holder


@pytest.mark.parametrize("renewals", [1, 4])
def test_unlock_breaks_a_lease_renewed_while_it_breaks_it(tmp_path: Path,
                                                          renewals: int) -> None:
    store = RenewedAfterReads(tmp_path, renewals)
    holder = leases.Lease(store, ttl=60, command="run", holder="ops")
    assert holder.try_acquire() is None
    store.holder = holder
    try:
        broken = leases.break_lease(store, "oncall (`window unlock`)", holder.token)
        assert broken.token == holder.token
        blob = store.get(leases.LEASE)
        assert blob is not None
        assert leases.LeaseInfo.parse(blob.data).broken_by == "oncall (`window unlock`)"
        holder.renew()  # the holder finds out at its next renewal
        with pytest.raises(LeaseLost, match="broken by oncall"):
            holder.check()
    finally:
        holder.release()


def test_unlock_gives_up_on_a_lease_renewed_each_time_and_spares_a_new_holder(
        tmp_path: Path) -> None:
    store = RenewedAfterReads(tmp_path, leases.BREAK_ATTEMPTS)
    holder = leases.Lease(store, ttl=60, command="run", holder="ops")
    assert holder.try_acquire() is None
    store.holder = holder
    try:
        with pytest.raises(GateRefused, match="renewed each of 5 times"):
            leases.break_lease(store, "oncall", holder.token)
        with pytest.raises(GateRefused, match=r"taken by ops on .* \(token 1\) meanwhile"):
            leases.break_lease(store, "oncall", holder.token + 1)  # not the one confirmed
        holder.check()  # still held: nothing was broken
    finally:
        holder.release()

def test_a_shared_journal_reads_from_memory(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.create_run("r1", ["preflight", "backup"], {"target": "db"})
    copy = Journal.from_bytes(journal._db.serialize())  # a WAL database, as uploaded
    assert copy.run("r1").target == "db"
    assert [p.name for p in copy.phases("r1")] == ["preflight", "backup"]


def test_the_state_section_and_fleet_targets() -> None:
    settings = make_settings(Path(), state={"backend": "s3", "uri": "s3://bucket/team/"})
    assert settings.state.uri == "s3://bucket/team"
    assert settings.backup_s3_uri == "s3://bucket/team/backups"
    scoped = settings.for_target("tenant-1")
    assert scoped.state.uri == "s3://bucket/team/targets/tenant-1"
    assert scoped.state_dir == settings.state_dir / "targets" / "tenant-1"
    fleet = settings.for_fleet()  # the fleet runner's lock and lease, beside no target's
    assert fleet.state.uri == "s3://bucket/team/fleet"
    assert fleet.state_dir == settings.state_dir / "fleet"
    with pytest.raises(ConfigError, match="not a target name"):
        settings.for_target("../escape")
    with pytest.raises(ConfigError, match="needs uri"):
        make_settings(Path(), state={"backend": "s3"})
    with pytest.raises(ConfigError, match=r"state\.lease_ttl"):
        make_settings(Path(), state={"lease_ttl": "1s"})


class Flaky(blobs.LocalStore):
    """A store out of reach for its first ``outage`` journal writes."""

    def __init__(self, root: Path, outage: int) -> None:
        super().__init__(root)
        self.outage = outage

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key == replica.JOURNAL and self.outage > 0:
            self.outage -= 1
            raise GateRefused("the shared state cannot be reached: connection refused")
        return super().put(key, data, **kwargs)


def test_a_journal_write_waits_out_an_outage_and_stops_when_it_outlasts_the_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica, "PUSH_RETRY_SECONDS", 0.05)
    store = Flaky(tmp_path / "shared", outage=3)
    lease = leases.Lease(store, ttl=60, command="run", holder="ops")
    assert lease.try_acquire() is None
    journal = Journal(tmp_path / "a" / "journal.sqlite")
    journal.remote = replica.Remote(store, lease)
    journal.create_run("r1", ["preflight"], {})  # three refusals, then written
    assert store.outage == 0 and store.get(replica.JOURNAL) is not None

    store.outage = 10**6  # S3 gone for good: the write holds the window until the lease ends
    short = leases.Lease(blobs.LocalStore(tmp_path / "other"), ttl=0.3, command="run",
                          holder="ops")
    assert short.try_acquire() is None
    short._stop.set()  # no renewals: it expires while the write waits
    journal.remote = replica.Remote(store, short)
    with pytest.raises(LeaseLost, match="expired"):
        journal.claim("r1", 1, None)
    lease.release()
