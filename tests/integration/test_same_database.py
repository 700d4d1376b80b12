"""A rollback gives back the same database, not only the same rows: its locale provider and
ICU locale, tablespace, connection limit and comment come back with it, and the copy that now
serves has planner statistics."""

from __future__ import annotations

import os
import shutil

import psycopg

from orchestrator.commands import demo
from orchestrator.postgres.cluster import SUPERUSER
from tests.support.shop import Shop, add_free_sample


def production_like_theirs(shop: Shop) -> None:
    """Production re-created with an ICU locale, in its own tablespace, with a connection
    limit and a comment; the role holds CREATE on that tablespace (README)."""
    space = shop.cluster.root / f"space_{shop.prod_db}"
    space.mkdir()
    if os.geteuid() == 0:  # the server runs as postgres (Cluster)
        shutil.chown(space, SUPERUSER)
    shop.cluster.psql(f"CREATE TABLESPACE {shop.prod_db}_fast LOCATION '{space}'")
    shop.cluster.psql(f"GRANT CREATE ON TABLESPACE {shop.prod_db}_fast TO {demo.APP_USER}")
    shop.cluster.psql(f"DROP DATABASE {shop.prod_db} WITH (FORCE)")
    shop.cluster.psql(
        f"CREATE DATABASE {shop.prod_db} OWNER {demo.APP_USER} TEMPLATE template0"
        f" ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'sv-SE'"
        f" TABLESPACE {shop.prod_db}_fast CONNECTION LIMIT 40")
    shop.cluster.psql(f"COMMENT ON DATABASE {shop.prod_db} IS 'orders of the shop'")
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute(demo.SHOP_SCHEMA)  # type: ignore[arg-type]


def database_object(shop: Shop) -> tuple[object, ...]:
    row = shop.cluster.psql(
        "SELECT concat_ws('|', d.datlocprovider, d.daticulocale, d.datcollate, t.spcname,"
        " d.datconnlimit, d.datallowconn, d.datistemplate,"
        " shobj_description(d.oid, 'pg_database'), pg_get_userbyid(d.datdba))"
        " FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
        f" WHERE d.datname = '{shop.prod_db}'")
    return tuple(row.split("|"))


def test_a_swap_gives_back_the_same_database_object_with_statistics(shop: Shop) -> None:
    production_like_theirs(shop)
    before = database_object(shop)
    shop.configure(demo.BAD_MIGRATION)
    add_free_sample(shop.prod_url)  # BAD_MIGRATION trips on it on production only

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.status()["state"] == "rolled_back"
    assert before == ("i", "sv-SE", "C.UTF-8", f"{shop.prod_db}_fast", "40", "t", "f",
                      "orders of the shop", demo.APP_USER)
    assert database_object(shop) == before
    assert shop.sql("SELECT count(*) FROM pg_stats WHERE tablename = 'orders'") > 0, \
        "the copy serving production has planner statistics"
    assert not shop.has_column("orders", "coupon_code")
