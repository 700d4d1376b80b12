"""How a database URL is read: Prisma's own parameters are not libpq's."""

from __future__ import annotations

import pytest

from orchestrator.postgres.pg import Db

PRISMA_URL = ("postgresql://app:p%40ss@db.internal:6543/shop"
              "?schema=tenant_a&connection_limit=5&sslmode=require")


def test_prisma_parameters_are_kept_for_the_commands_and_left_out_for_libpq() -> None:
    db = Db.from_url(PRISMA_URL)

    assert db.url == PRISMA_URL  # `prisma migrate deploy` needs its schema and pool settings
    assert db.schema == "tenant_a"
    assert db.params == {"user": "app", "password": "p@ss", "host": "db.internal",
                         "port": "6543", "dbname": "shop", "sslmode": "require",
                         "options": '-c search_path="tenant_a"'}  # as Prisma's sessions see
    assert str(db) == "db.internal:6543/shop"
    assert db.on("postgres").schema == "tenant_a"


def test_other_query_parameters_pass_through_untouched() -> None:
    db = Db.from_url("postgresql://u@h/db?options=-c%20statement_timeout%3D1234"
                     "&application_name=my%20app&schema=My%20App")
    assert db.params["options"] == '-c statement_timeout=1234 -c search_path="My\\ App"'
    assert db.params["application_name"] == "my app"
    assert Db.from_url("postgresql:///postgres?host=127.0.0.1&sslmode=disable").params == {
        "dbname": "postgres", "host": "127.0.0.1", "sslmode": "disable"}


def test_a_url_through_pgbouncer_is_refused() -> None:
    with pytest.raises(ValueError, match="directUrl"):
        Db.from_url("postgresql://u@h:6432/db?pgbouncer=true")


def test_plain_urls_and_keyword_strings_are_unchanged() -> None:
    assert Db.from_url("postgresql://app@h/shop").schema is None
    assert Db.from_url("host=h dbname=shop").params == {"host": "h", "dbname": "shop"}
