"""How a database URL is read: Prisma's own parameters are not libpq's."""

from __future__ import annotations

from orchestrator.pg import Db

PRISMA_URL = ("postgresql://app:p%40ss@db.internal:6543/shop"
              "?schema=tenant_a&connection_limit=5&pgbouncer=true&sslmode=require")


def test_prisma_parameters_are_kept_for_the_commands_and_left_out_for_libpq() -> None:
    db = Db.from_url(PRISMA_URL)

    assert db.url == PRISMA_URL  # `prisma migrate deploy` needs its schema and pool settings
    assert db.schema == "tenant_a"
    assert db.params == {"user": "app", "password": "p@ss", "host": "db.internal",
                         "port": "6543", "dbname": "shop", "sslmode": "require"}
    assert str(db) == "db.internal:6543/shop"
    assert db.on("postgres").schema == "tenant_a"


def test_plain_urls_and_keyword_strings_are_unchanged() -> None:
    assert Db.from_url("postgresql://app@h/shop").schema is None
    assert Db.from_url("host=h dbname=shop").params == {"host": "h", "dbname": "shop"}
