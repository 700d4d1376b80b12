"""Prisma's ``_prisma_migrations`` table as ``prisma migrate deploy`` creates and fills it:
the tests of the tool's table, of the clinic and of rehearsals make one by hand."""

from __future__ import annotations

import hashlib

from orchestrator.commands import demo

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
