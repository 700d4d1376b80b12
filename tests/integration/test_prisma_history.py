"""Whole windows over a real-looking Prisma history (tests/fixtures/prisma-shop: 17 migrations
with enums, foreign keys, indexes, a renamed column, data backfills, an enum value added),
migrated by a stand-in for ``prisma migrate deploy`` that keeps ``_prisma_migrations`` as
Prisma does and reads only its URL (tests/support/prisma_deploy.py).

Production and staging hold the first 13 migrations and some data; 4 are pending.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.support.shop import Shop

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT / "tests" / "fixtures" / "prisma-shop" / "prisma" / "migrations"
APPLIED = 13
DEPLOY = f"PYTHONPATH={ROOT} {sys.executable} -m tests.support.prisma_deploy prisma/migrations"
SEED = """
INSERT INTO "User" ("email", "fullName") SELECT 'user' || g || '@example.com', 'User ' || g
  FROM generate_series(1, 50) g;
INSERT INTO "Product" ("name", "priceCents", "sku") SELECT 'Product ' || g, 100 * g,
  CASE WHEN g % 2 = 0 THEN 'P-' || g END FROM generate_series(1, 20) g;
INSERT INTO "Order" ("userId", "status") SELECT 1 + g % 50, 'PAID' FROM generate_series(1, 100) g;
INSERT INTO "OrderItem" ("orderId", "productId", "quantity", "priceCents")
  SELECT 1 + g % 100, 1 + g % 20, 1 + g % 3, 100 FROM generate_series(1, 300) g;
"""
PENDING = sorted(p.name for p in HISTORY.iterdir() if p.is_dir())[APPLIED:]


def prisma_shop(shop: Shop) -> None:
    """The history in the project; both databases at its first ``APPLIED`` migrations."""
    shutil.copytree(HISTORY, shop.folder / "prisma" / "migrations")
    first = shop.folder.parent / "first"
    for name in sorted(p.name for p in HISTORY.iterdir() if p.is_dir())[:APPLIED]:
        shutil.copytree(HISTORY / name, first / name)
    for url in (shop.prod_url, shop.staging_url):
        done = subprocess.run([sys.executable, "-m", "tests.support.prisma_deploy", str(first)],
                              cwd=ROOT, env={**shop.env, "DATABASE_URL": url},
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SEED)  # type: ignore[arg-type]
    shop.configure(migrate=DEPLOY, migrate_extra='tool = "prisma"\nfiles = "prisma/migrations"')


def recorded(shop: Shop, url: str | None = None) -> list[tuple[str, bool]]:
    with psycopg.connect(url or shop.prod_url, autocommit=True) as conn:
        return [(name, done) for name, done in conn.execute(
            "SELECT migration_name, finished_at IS NOT NULL FROM _prisma_migrations"
            " ORDER BY migration_name")]


def test_the_pending_prisma_migrations_run_through_a_whole_window(shop: Shop) -> None:
    prisma_shop(shop)
    plan = shop.window("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert all(name in plan.stdout for name in PENDING), plan.stdout

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.status()["state"] == "completed"
    assert [done for _, done in recorded(shop)] == [True] * len(PENDING + [""] * APPLIED)
    assert shop.sql('SELECT count(*) FROM "Product" WHERE "sku" IS NULL') == 0
    assert "Traceback" not in done.stdout + done.stderr


def test_a_failure_in_the_middle_of_the_pending_migrations_is_rolled_back(shop: Shop) -> None:
    prisma_shop(shop)
    # Only production sells something for free: the third pending migration's CHECK fails
    # there, after the two before it committed (each Prisma migration is its own transaction).
    shop.sql('INSERT INTO "Product" ("name", "priceCents", "sku") VALUES (\'sample\', 0,'
             " 'FREE') RETURNING 1")
    before, schema, history = shop.fingerprint(), shop.schema(), recorded(shop)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["state"] == "rolled_back"
    error = shop.phase("migrate")["error"]
    assert "20250715100000_price_positive failed" in error
    # Production's failed row goes with the rollback: no `prisma migrate resolve` to run.
    assert "the rollback takes this record away with the rest; only if production keeps it"\
        in error
    assert (shop.fingerprint(), shop.schema(), recorded(shop)) == (before, schema, history)
    kept = shop.status()["rollback"]["retained_database"]
    half = recorded(shop, shop.prod_url.rsplit("/", 1)[0] + "/" + kept)
    assert half[APPLIED:] == [(PENDING[0], True), (PENDING[1], True), (PENDING[2], False)], \
        "the evidence: two applied, the third recorded as failed"
