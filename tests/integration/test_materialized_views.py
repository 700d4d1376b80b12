"""A restore recomputes every populated materialized view from its tables, so a view that was
stale at the backup comes back with other contents than production held. The window says so
(a warning, the backup's facts, its summary, ``window status``) without failing a backup whose
tables it proved equal; a fresh view says nothing, and one made WITH NO DATA is left alone."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from orchestrator.commands import demo
from tests.support.shop import DROP_STANDBY, Shop, add_free_sample, failing_migration

VIEW = "public.order_ids"
RECOMPUTED = {"view": VIEW, "rows_at_backup": 2000, "rows_in_copy": 2005}


def views_over_orders(shop: Shop, *, refreshed: bool) -> None:
    """Production's ``order_ids`` (2000 rows), then 5 orders it has not seen unless
    ``refreshed``; and ``unread``, made WITH NO DATA, which cannot be read at all."""
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE MATERIALIZED VIEW order_ids AS SELECT id, customer FROM orders")
        conn.execute("CREATE MATERIALIZED VIEW unread AS SELECT id FROM orders WITH NO DATA")
        conn.execute("INSERT INTO orders (customer) SELECT 'late' FROM generate_series(1, 5)")
        if refreshed:
            conn.execute("REFRESH MATERIALIZED VIEW order_ids")


def audit_events(shop: Shop, name: str) -> list[dict[str, Any]]:
    lines = (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == name]


def backup_summary(shop: Shop) -> str:
    done = next(e for e in audit_events(shop, "phase_succeeded") if e.get("phase") == "backup")
    return str(done["summary"])


def unread_is_unpopulated(shop: Shop) -> bool:
    return shop.sql("SELECT NOT relispopulated FROM pg_class WHERE relname = 'unread'") is True


def test_a_stale_view_is_reported_not_failed_and_comes_back_recomputed(shop: Shop) -> None:
    views_over_orders(shop, refreshed=False)
    shop.configure(demo.BAD_MIGRATION)
    add_free_sample(shop.prod_url)  # BAD_MIGRATION trips on it on production only

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["state"] == "rolled_back"
    assert shop.phase("backup")["status"] == "succeeded", "a stale view fails no backup"
    backup = shop.status()["backup"]
    assert backup["recomputed_views"] == [RECOMPUTED]
    assert set(backup["materialized_views"]) == {VIEW}, "the view WITH NO DATA is skipped"
    assert backup["materialized_views"][VIEW]["rows"] == 2000, "as production held it"
    warned = audit_events(shop, "materialized_view_recomputed")
    assert [{k: e[k] for k in RECOMPUTED} for e in warned] == [RECOMPUTED]
    assert warned[0]["level"] == "warning"
    shown = f"{VIEW} (2000 rows at the backup, 2005 rows in the copy)"
    assert shown in backup_summary(shop)
    assert shown in shop.window("status").stdout
    assert shop.sql("SELECT count(*) FROM order_ids") == 2005, "recomputed by the restore"
    assert unread_is_unpopulated(shop)
    assert not shop.has_column("orders", "coupon_code")


def test_the_rollback_restoring_the_archive_reports_the_view_too(shop: Shop) -> None:
    views_over_orders(shop, refreshed=False)
    failing_migration(shop, DROP_STANDBY)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["rollback"]["method"] == "restore"
    warned = audit_events(shop, "materialized_view_recomputed")
    assert [e["phase"] for e in warned] == ["backup", "rollback"]
    assert all({k: e[k] for k in RECOMPUTED} == RECOMPUTED for e in warned)
    assert shop.sql("SELECT count(*) FROM order_ids") == 2005
    assert unread_is_unpopulated(shop)


def test_a_fresh_view_is_checksummed_and_reports_nothing(shop: Shop) -> None:
    views_over_orders(shop, refreshed=True)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    backup = shop.status()["backup"]
    assert backup["recomputed_views"] == []
    assert backup["materialized_views"][VIEW]["rows"] == 2005
    assert backup["materialized_views"][VIEW]["checksum"]
    assert audit_events(shop, "materialized_view_recomputed") == []
    assert "recomputed" not in backup_summary(shop)
    assert "recomputed" not in shop.window("status").stdout
