"""Backups proven before the banner goes up; rollback by swap, or by restore from a checked
archive; the writes a rollback would discard, reported or paused on."""

from __future__ import annotations

import json

import psycopg

from orchestrator.commands import demo
from tests.support.shop import DROP_STANDBY, Shop, failing_migration

TAMPER = 'printf garbage >> "backups/$WINDOW_RUN_ID/toc.dat"'
LATE_WRITES = ('psql -X -q "$DATABASE_URL" -c "INSERT INTO orders (customer)'
               ' SELECT \'late\' FROM generate_series(1, 5)" && ')


def test_backup_checksums_describe_production_before_the_migration(shop: Shop) -> None:
    before = shop.fingerprint()
    done = shop.run_window()
    assert done.returncode == 0, done.stderr
    backup = shop.status()["backup"]
    assert backup["tables"] == before
    assert backup["verified"] is True
    manifest = (shop.folder / "backups" / f"{shop.status()['run_id']}.sha256").read_text()
    assert "toc.dat" in manifest
    events = [json.loads(line)["event"] for line in
              (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()]
    assert {"backup_dumped", "backup_restored", "backup_verified", "standby_dropped"} <= set(
        events)


def test_values_stored_as_oids_are_checksummed_so_that_a_restore_agrees(shop: Shop) -> None:
    # An enum's value is stored (and hashed by hash_record_extended) as the OID of its label,
    # a regclass as a table's OID: a restore gives both new OIDs. Every Prisma enum is one.
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE TYPE status AS ENUM ('new', 'paid'); CREATE DOMAIN statuses AS"
                     " status[]; CREATE TYPE pair AS (s status, n int);"
                     " CREATE TABLE tagged (s status, ss statuses, p pair, r regclass);"
                     " INSERT INTO tagged VALUES ('paid', '{new,paid}', ROW('new', 1),"
                     " 'orders')")

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.status()["backup"]["verified"] is True


def test_rollback_restores_from_the_archive_when_the_standby_is_gone(shop: Shop) -> None:
    failing_migration(shop, DROP_STANDBY)
    before, schema = shop.fingerprint(), shop.schema()

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["rollback"]["method"] == "restore"
    assert shop.fingerprint() == before
    assert shop.schema() == schema
    assert len(shop.databases(f"{shop.prod_db}_failed_%")) == 1
    assert shop.banner_log() == ["on", "off"]


def test_tampered_archive_is_refused_before_any_restore(shop: Shop) -> None:
    failing_migration(shop, DROP_STANDBY, TAMPER)

    done = shop.run_window()

    assert done.returncode == 4, done.stdout + done.stderr
    assert shop.status()["state"] == "needs_attention"
    assert "toc.dat" in shop.phase("rollback")["error"]
    assert "manifest" in shop.phase("rollback")["error"]
    assert shop.banner_log() == ["on"], "the banner stays up over a database nobody restored"
    assert shop.has_column("orders", "status"), "production was not touched"
    assert shop.databases(f"{shop.prod_db}_failed_%") == []


def test_write_gap_is_reported_and_kept(shop: Shop) -> None:
    failing_migration(shop, banner_on=LATE_WRITES + "echo on >> banner.log")

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    rollback = shop.status()["rollback"]
    assert rollback["write_gap"] == {"public.orders": 5}
    assert "writes_discarded" in done.stderr
    assert "public.orders ~5" in done.stdout
    kept = shop.cluster.url(rollback["retained_database"])
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'late'", kept) == 5
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'late'") == 0


def test_write_gap_stop_pauses_until_the_loss_is_accepted(shop: Shop) -> None:
    failing_migration(shop, banner_on=LATE_WRITES + "echo on >> banner.log")
    shop.config.write_text(shop.config.read_text().replace(
        "jobs = 2\n", 'jobs = 2\non_write_gap = "stop"\n'))

    paused = shop.run_window()

    assert paused.returncode == 4, paused.stderr
    assert shop.status()["state"] == "needs_attention"
    assert shop.banner_log() == ["on"]
    assert "window abort --accept-data-loss" in paused.stdout
    assert "pg_dump --data-only --table=public.orders" in paused.stdout
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'late'") == 5

    plain = shop.window("abort", "--confirm", demo.PHRASE)
    assert plain.returncode == 4, "without --accept-data-loss nothing changes"
    accepted = shop.window("abort", "--accept-data-loss", "--confirm", demo.PHRASE)

    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert shop.status()["state"] == "rolled_back"
    assert shop.banner_log() == ["on", "off"]
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'late'") == 0


def after_banner(shop: Shop) -> None:
    shop.config.write_text(shop.config.read_text().replace(
        "jobs = 2\n", 'jobs = 2\nwhen = "after_banner"\n'))


def test_after_banner_keeps_the_writes_a_rollback_would_lose(shop: Shop) -> None:
    failing_migration(shop, banner_on=LATE_WRITES + "echo on >> banner.log")
    after_banner(shop)

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    phases = {p["name"]: p for p in shop.status()["phases"]}
    assert phases["banner_on"]["started_at"] <= phases["backup"]["started_at"]
    assert [p["name"] for p in shop.status()["phases"]][2:4] == ["banner_on", "backup"]
    assert shop.status()["rollback"]["write_gap"] is None
    assert shop.sql("SELECT count(*) FROM orders WHERE customer = 'late'") == 5
    late = shop.status()["rollback"]["written_behind_banner"]
    assert late is not None and "public.orders" not in late, "in the backup: not lost"
    assert shop.banner_log() == ["on", "off"]


def test_after_banner_a_failed_backup_takes_the_banner_down(shop: Shop) -> None:
    after_banner(shop)
    shop.config.write_text(shop.config.read_text().replace("[timeouts]\n",
                                                           '[timeouts]\nbackup = "2s"\n'))
    locker = psycopg.connect(shop.prod_url)
    locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    try:
        done = shop.run_window()
    finally:
        locker.close()

    assert done.returncode == 3, done.stderr
    assert shop.status()["state"] == "aborted"
    assert shop.banner_log() == ["on", "off"]
    assert "banner_lowered_before_abort" in done.stderr
