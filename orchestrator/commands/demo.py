"""``window demo``: two whole windows against a throwaway PostgreSQL, nothing left behind.

It starts a private cluster, builds a small shop (products, orders, order items) as
production and a copy as staging, then runs the real ``window run`` twice: a migration that
succeeds, and one that half-applies on production (a constraint that only production's data
violates) and is rolled back. It proves production after the rollback equals production
before it, table by table. The test suite builds its fixtures with the same functions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.errors import ExitCode
from orchestrator.postgres import figures
from orchestrator.postgres.cluster import Cluster
from orchestrator.postgres.figures import TableFigures

APP_USER = "shop_app"
APP_PASSWORD = "Sh0p:p@ss/w0rd%"  # noqa: S105 - a throwaway cluster's password, shown redacted
PHRASE = "DEMO-PROD-OK"

SHOP_SCHEMA = """
CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, price_cents int NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL,
                     placed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (id serial PRIMARY KEY, order_id int NOT NULL REFERENCES orders(id),
                          product_id int NOT NULL REFERENCES products(id), quantity int NOT NULL);
CREATE INDEX order_items_order ON order_items(order_id);
INSERT INTO products (name, price_cents) SELECT 'product ' || i, 100 + i * 7 % 5000
  FROM generate_series(1, 200) i;
INSERT INTO orders (customer, placed_at) SELECT 'customer ' || (i % 300),
  timestamptz '2026-01-01' + i * interval '37 minutes' FROM generate_series(1, 2000) i;
INSERT INTO order_items (order_id, product_id, quantity)
  SELECT 1 + i % 2000, 1 + i % 200, 1 + i % 4 FROM generate_series(1, 6000) i;
"""

# A migration that works everywhere, written to be re-run safely.
GOOD_MIGRATION = """
ALTER TABLE orders ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'paid';
CREATE TABLE IF NOT EXISTS shipments (id serial PRIMARY KEY,
  order_id int NOT NULL REFERENCES orders(id), carrier text NOT NULL);
CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
"""

# Committed statement by statement, then a constraint only production's data breaks.
BAD_MIGRATION = """
CREATE TABLE coupons (code text PRIMARY KEY, percent int NOT NULL);
ALTER TABLE orders ADD COLUMN coupon_code text REFERENCES coupons(code);
UPDATE orders SET customer = upper(customer) WHERE placed_at < '2026-01-15';
ALTER TABLE products ADD CONSTRAINT products_price_positive CHECK (price_cents > 0);
"""


def create_shop(cluster: Cluster, dbname: str) -> str:
    """A shop database owned by the application's role; its URL (with a password)."""
    exists = cluster.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}'")
    if not exists:
        cluster.psql(f"CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}';"
                     f" GRANT pg_signal_backend TO {APP_USER}")
    cluster.psql(f"CREATE DATABASE {dbname} OWNER {APP_USER}")
    url = cluster.url(dbname, user=APP_USER, password=APP_PASSWORD)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SHOP_SCHEMA)
    return url


def fingerprint(url: str) -> dict[str, TableFigures]:
    with psycopg.connect(url, autocommit=True) as conn:
        return figures.describe_tables(conn)


DEMO_CONTACTS = """[contacts]
        on_call = "Maria Papadopoulou +30 691 000 0001"
        backup = "Nikos Georgiou +30 691 000 0002"
        db_support = "dba-oncall@example.com"
        decision_maker = "Eleni Ioannou (CTO) +30 691 000 0003"
"""


DEMO_CHECKS = textwrap.dedent("""
            [[checks]]
            name = "orders-intact"
            kind = "sql"
            query = "SELECT count(*) >= 2000 FROM orders"

            [[checks]]
            name = "database-answers"
            kind = "command"
            command = 'psql -X -At -c "SELECT 1" "$DATABASE_URL"'
            expect_output = "1"
        """)


def write_project(folder: Path, migration_sql: str, **overrides: Any) -> Path:
    """A git checkout holding window.toml, a migration and a file banner; the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "migration.sql").write_text(migration_sql)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    settings = {
        "migrate": 'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"',
        "banner_on": "touch maintenance.on",
        "banner_off": "rm -f maintenance.on",
        "timeouts": "",
        "migrate_extra": "",  # more [migrate] keys, one per line
        "contacts": DEMO_CONTACTS,  # the [contacts] table (and [notify], ... after it)
        "checks": DEMO_CHECKS,
        **overrides,
    }
    (folder / "window.toml").write_text(textwrap.dedent(f"""\
        [window]
        name = "shop-prod"
        confirm_phrase = "{PHRASE}"

        [target]
        url_env = "DATABASE_URL"

        [staging]
        url_env = "DATABASE_URL_STAGING"

        [backup]
        dir = "backups"
        jobs = 2

        [banner]
        on = {_toml(settings["banner_on"])}
        off = {_toml(settings["banner_off"])}

        [migrate]
        command = {_toml(settings["migrate"])}
        {settings["migrate_extra"]}

        [timeouts]
        {settings["timeouts"]}

        {settings["contacts"]}
        """) + settings["checks"])
    return folder / "window.toml"


def _toml(value: str) -> str:
    return "'" + value + "'" if "'" not in value else '"' + value.replace('"', '\\"') + '"'


def _window(config: Path, env: dict[str, str]) -> int:
    print(f"\n$ window run --config {config.name} --confirm {PHRASE}", flush=True)
    return subprocess.run([sys.executable, "-m", "orchestrator", "run", "--config",
                           str(config), "--confirm", PHRASE], cwd=config.parent, env=env,
                          check=False).returncode


def _compare(before: dict[str, TableFigures], after: dict[str, TableFigures]) -> bool:
    print(f"\n{'table':<22} {'rows before':>12} {'rows after':>12}  checksum")
    missing = TableFigures(rows=0, checksum="-")
    for table in sorted({*before, *after}):
        b, a = before.get(table, missing), after.get(table, missing)
        verdict = "same" if a == b else "DIFFERENT"
        print(f"{table:<22} {b['rows']:>12} {a['rows']:>12}  {b['checksum'][:14]:<14} {verdict}")
    return before == after


def main(keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="window-demo-"))
    cluster = Cluster()
    try:
        print(f"Working in {workdir}; starting a throwaway PostgreSQL in {cluster.root} ...",
              flush=True)
        cluster.init().start()
        staging_url = create_shop(cluster, "shop_staging")
        prod_url = create_shop(cluster, "shop")
        # Production holds a row staging never saw: the second migration will trip on it.
        with psycopg.connect(prod_url, autocommit=True) as conn:
            conn.execute("INSERT INTO products (name, price_cents) VALUES ('free sample', 0)")
        env = {**os.environ, "DATABASE_URL": prod_url, "DATABASE_URL_STAGING": staging_url,
               "NO_COLOR": "1"}
        print("\n== Window 1: a migration that succeeds ==")
        first = _window(write_project(workdir / "good", GOOD_MIGRATION), env)
        print("\n== Window 2: a migration that half-applies on production ==")
        before = fingerprint(prod_url)
        second = _window(write_project(workdir / "bad", BAD_MIGRATION), env)
        equal = _compare(before, fingerprint(prod_url))
        kept = cluster.psql("SELECT string_agg(datname, ', ') FROM pg_database"
                            " WHERE datname LIKE 'shop_failed_%'")
        print(f"\nwindow 1 exited {first} (0 = completed); window 2 exited {second}"
              " (1 = rolled back)")
        print(f"production after the rollback equals production before it: "
              f"{'yes' if equal else 'NO'}; the failed database is kept as {kept}")
        as_shown = (first, second, equal) == (ExitCode.COMPLETED, ExitCode.FAILED, True)
        return ExitCode.COMPLETED if as_shown else ExitCode.FAILED
    finally:
        cluster.destroy()
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
