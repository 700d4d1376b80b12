"""The benchmark's data: a tuned throwaway cluster and a shop database of a chosen size.

Everything is generated server-side with ``generate_series`` (no rows cross the wire), into
tables that carry no keys yet; primary keys, secondary indexes and foreign keys are built
afterwards, which is how a bulk load is fastest. Row counts scale linearly with the size asked
for; ORDERS_PER_GB was measured on PostgreSQL 15 so that the database on disk (tables, TOAST and
indexes, ``pg_database_size``) comes out slightly above the target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from orchestrator.commands.demo import APP_PASSWORD, APP_USER
from orchestrator.postgres.cluster import Cluster

GIB = 1024**3

# Settings for a bulk load on a 2-core, 24 GiB machine; the cluster already runs fsync off.
BULK_LOAD_SETTINGS = {
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_parallel_maintenance_workers": "2",
}

# Orders per GiB on disk; every other table is sized relative to orders. Measured: ~798 MiB of
# tables and indexes per million orders, plus ~8 MiB of catalog, so 1.34 million orders make
# about 1.05 GiB.
ORDERS_PER_GB = 1_340_000

TABLES = """
CREATE TABLE customers (id bigint NOT NULL, email text NOT NULL, full_name text NOT NULL,
  country text NOT NULL, created_at timestamptz NOT NULL, profile jsonb NOT NULL);
CREATE TABLE products (id bigint NOT NULL, sku text NOT NULL, name text NOT NULL,
  description text NOT NULL, price numeric(10,2) NOT NULL, attributes jsonb NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigint NOT NULL, customer_id bigint NOT NULL,
  placed_at timestamptz NOT NULL, status text NOT NULL, total numeric(12,2) NOT NULL,
  shipping_address jsonb NOT NULL, note text);
CREATE TABLE order_items (id bigint NOT NULL, order_id bigint NOT NULL,
  product_id bigint NOT NULL, quantity int NOT NULL, unit_price numeric(10,2) NOT NULL,
  discount numeric(5,2) NOT NULL);
CREATE TABLE payments (id bigint NOT NULL, order_id bigint NOT NULL, amount numeric(12,2) NOT NULL,
  method text NOT NULL, paid_at timestamptz NOT NULL, details jsonb NOT NULL);
"""

# {customers}, {products}, {orders}, {items} are row counts (integers, formatted in).
LOADS = {
    "customers": """
INSERT INTO customers SELECT i,
  'customer' || i || '@example.' || (ARRAY['com','org','net','io'])[1 + i % 4],
  (ARRAY['Ana','Ben','Chloe','Dimitris','Eva','Farid','Greta','Hugo','Ines','Jonas'])[1 + i % 10]
    || ' ' || (ARRAY['Papas','Smith','Novak','Rossi','Klein','Silva','Berg','Kowalski'])
               [1 + (i / 10) % 8],
  (ARRAY['GR','DE','FR','IT','NL','ES','PL','SE'])[1 + (i * 7) % 8],
  timestamptz '2019-01-01' + (i * 7919 % 157680000) * interval '1 second',
  jsonb_build_object('newsletter', i % 3 = 0,
                     'tier', (ARRAY['bronze','silver','gold'])[1 + i % 3],
                     'tags', jsonb_build_array('t' || i % 17, 't' || i % 29),
                     'referrer', md5(i::text))
FROM generate_series(1::bigint, {customers}) i""",
    "products": """
INSERT INTO products SELECT i, 'SKU-' || lpad(i::text, 8, '0'),
  (ARRAY['Olive oil','Honey','Feta','Oregano','Tea','Soap','Wine','Pasta'])[1 + i % 8] || ' ' || i,
  'Small-batch product ' || i || ' from a family producer. ' || repeat(md5(i::text) || ' ', 4),
  round((1 + (i * 37 % 20000) / 100.0)::numeric, 2),
  jsonb_build_object('weight_g', 50 + i % 1500, 'organic', i % 2 = 0,
                     'origin', (ARRAY['Crete','Lesvos','Naxos','Epirus'])[1 + i % 4]),
  timestamptz '2020-01-01' + i * interval '17 minutes'
FROM generate_series(1::bigint, {products}) i""",
    "orders": """
INSERT INTO orders SELECT i, 1 + (i * 2654435761) % {customers},
  timestamptz '2023-01-01' + i * interval '23 seconds',
  (ARRAY['paid','paid','paid','shipped','shipped','delivered','cancelled','refunded'])[1 + i % 8],
  round((5 + (i * 7919 % 50000) / 100.0)::numeric, 2),
  jsonb_build_object('street', (i % 200) || ' Odos ' || md5(i::text)::varchar(10),
                     'city', (ARRAY['Athens','Thessaloniki','Patras','Heraklion'])[1 + i % 4],
                     'zip', lpad((i % 99999)::text, 5, '0')),
  CASE WHEN i % 5 = 0 THEN 'Please leave at the door, order ' || i END
FROM generate_series(1::bigint, {orders}) i""",
    "order_items": """
INSERT INTO order_items SELECT i, 1 + i % {orders}, 1 + (i * 7919) % {products},
  1 + i % 5, round((1 + (i * 37 % 20000) / 100.0)::numeric, 2), (i % 4) * 5
FROM generate_series(1::bigint, {items}) i""",
    "payments": """
INSERT INTO payments SELECT i, i, round((5 + (i * 7919 % 50000) / 100.0)::numeric, 2),
  (ARRAY['card','card','paypal','bank_transfer'])[1 + i % 4],
  timestamptz '2023-01-01' + i * interval '23 seconds' + interval '2 minutes',
  jsonb_build_object('provider', 'psp-' || i % 3, 'reference', md5('pay' || i),
                     'attempts', 1 + i % 2)
FROM generate_series(1::bigint, {orders}) i""",
}

KEYS = """
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE products ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE order_items ADD PRIMARY KEY (id);
ALTER TABLE payments ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX customers_email ON customers (email);
CREATE UNIQUE INDEX products_sku ON products (sku);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed_at ON orders (placed_at);
CREATE INDEX order_items_order ON order_items (order_id);
CREATE INDEX order_items_product ON order_items (product_id);
CREATE UNIQUE INDEX payments_order ON payments (order_id);
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (id);
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products (id);
ALTER TABLE payments ADD FOREIGN KEY (order_id) REFERENCES orders (id);
"""


@dataclass(frozen=True)
class Shape:
    """Row counts for one database size."""

    customers: int
    products: int
    orders: int
    items: int

    @classmethod
    def for_size(cls, gigabytes: float) -> Shape:
        orders = max(100, round(ORDERS_PER_GB * gigabytes))
        return cls(customers=max(10, orders // 5), products=max(10, orders // 100),
                   orders=orders, items=orders * 3)


def tune(cluster: Cluster, **settings: object) -> None:
    """Bulk-load settings, then ``settings``, for an initialised cluster before it starts
    (later lines win)."""
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = '{value}'\n"
                        for key, value in {**BULK_LOAD_SETTINGS, **settings}.items())


@contextmanager
def throwaway_cluster(**settings: object) -> Iterator[Cluster]:
    """A private cluster tuned for bulk loads (``settings`` added), started; destroyed
    afterwards, whatever happened."""
    cluster = Cluster()
    print(f"Starting a throwaway PostgreSQL in {cluster.root} ...", flush=True)
    try:
        cluster.init()
        tune(cluster, **settings)
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def create_app_database(cluster: Cluster, dbname: str) -> str:
    """An empty database owned by the application's role (made as ``demo.create_shop`` does)."""
    if not cluster.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}'"):
        cluster.psql(f"CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}';"
                     f" GRANT pg_signal_backend TO {APP_USER}")
    cluster.psql(f"CREATE DATABASE {dbname} OWNER {APP_USER}")
    return cluster.url(dbname, user=APP_USER, password=APP_PASSWORD)


def generate(url: str, shape: Shape, progress: bool = True) -> None:
    """Tables, rows, then keys, indexes and foreign keys, then VACUUM ANALYZE.

    The VACUUM sets hint bits and the visibility map, so the first reader after the load (the
    raw pg_dump) does not pay for them while the window's later dumps do not.
    """
    counts = {"customers": shape.customers, "products": shape.products,
              "orders": shape.orders, "items": shape.items}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLES)
        for table, sql in LOADS.items():
            _step(conn, f"loading {table}", sql.format(**counts), progress)
        _step(conn, "building keys, indexes and foreign keys", KEYS, progress)
        _step(conn, "vacuum analyze", "VACUUM (ANALYZE)", progress)


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _step(conn: psycopg.Connection[tuple[object, ...]], label: str, sql: str,
          progress: bool) -> None:
    started = time.monotonic()
    conn.execute(sql)  # built from constants and integers only
    if progress:
        print(f"  {label}: {time.monotonic() - started:.1f}s", flush=True)


def database_size(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"
