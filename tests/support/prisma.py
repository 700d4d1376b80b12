"""Prisma's ``_prisma_migrations`` table as ``prisma migrate deploy`` creates and fills it:
the tests of the tool's table, of the clinic and of rehearsals make one by hand."""

from __future__ import annotations

import hashlib

from orchestrator.commands import demo
from tests.support.shop import Shop

# Prisma's documented table, as `prisma migrate deploy` creates it.
PRISMA_TABLE = (
    'CREATE TABLE IF NOT EXISTS "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY NOT NULL,'
    ' "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ,'
    ' "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,'
    ' "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),'
    ' "applied_steps_count" INTEGER NOT NULL DEFAULT 0)')


def applied_row(name: str, sql: str = demo.GOOD_MIGRATION) -> str:
    """The row Prisma records for an applied migration: its checksum is the file's sha256
    (the migration clinic compares)."""
    checksum = hashlib.sha256(sql.encode()).hexdigest()
    return ("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name,"
            f" applied_steps_count) VALUES (gen_random_uuid(), '{checksum}', now(), '{name}', 1)")


# Applies the pending prisma/migrations folders and records them, as `prisma migrate deploy`
# does; each run is logged with its phase, so a test can count the rehearsals.
FAKE_PRISMA = f"""#!/bin/sh
set -e
echo "$WINDOW_PHASE" >> migrate-runs.log
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c '{PRISMA_TABLE}'
for dir in prisma/migrations/*/; do
  name=$(basename "$dir")
  done=$(psql -X -At "$DATABASE_URL" -c "SELECT count(*) FROM _prisma_migrations
    WHERE migration_name = '$name' AND finished_at IS NOT NULL")
  [ "$done" = 0 ] || continue
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$dir/migration.sql"
  sum=$(sha256sum "$dir/migration.sql" | cut -d' ' -f1)
  psql -X -q "$DATABASE_URL" -c "INSERT INTO _prisma_migrations (id, checksum, finished_at,
    migration_name, applied_steps_count) VALUES (gen_random_uuid(), '$sum', now(), '$name', 1)"
done
"""
MIGRATION = "20261130000000_status"


def prisma_project(shop: Shop, *, staging: str = "", **overrides: str) -> None:
    """A project whose migration is one Prisma folder, applied by ``FAKE_PRISMA``; ``staging``
    is added to the config's [staging] table."""
    folder = shop.folder / "prisma" / "migrations" / MIGRATION
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "migration.sql").write_text(demo.GOOD_MIGRATION)
    script = shop.folder / "fake-prisma.sh"
    script.write_text(FAKE_PRISMA)
    script.chmod(0o755)
    overrides.setdefault("migrate", "./fake-prisma.sh")
    config = shop.configure(migrate_extra='tool = "prisma"\nfiles = "prisma/migrations"',
                            **overrides)
    text = config.read_text().replace("[staging]\n", f"[staging]\n{staging}\n")
    config.write_text(text + "\n[lint]\nsquawk = false\nidempotency = false\n")
