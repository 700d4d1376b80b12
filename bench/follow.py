"""``python -m bench.follow``: what a rollback loses under load, with the standby following
production (``[backup] follow = "auto"``) and without (``"off"``), side by side.

On a throwaway cluster, the demo shop (its orders grown to ``BENCH_GB`` GiB when given)
takes inserts, updates and deletes from a writer at ``BENCH_WRITES`` per second (default 300)
from before the window starts until its banner
goes up; the window's migration fails on production, so it rolls back by swap. Then every
table of production is compared with the retained database (production as it was at the
banner, the migration's own table aside), rows and checksums: the rows lost are counted,
not estimated. The downtime the follow adds at the banner is its catch-up (applied,
sequences copied, tables compared), from the journal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import windows
from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster

ROLE, PASSWORD = "shop_follower", "f0llow-bench"  # a throwaway cluster's role
COLUMNS = {"orders": "id, customer, placed_at", "products": "id, name, price_cents",
           "order_items": "id, order_id, product_id, quantity"}


class Writer(threading.Thread):
    """Inserts, updates and deletes on production at ``rate`` statements a second, until the
    banner file appears or it is told to stop."""

    def __init__(self, url: str, rate: float, banner: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.banner = url, rate, banner
        self.stop = threading.Event()
        self.written, self.seconds = 0, 0.0

    def run(self) -> None:
        started = time.monotonic()
        with psycopg.connect(self.url, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set() and not self.banner.exists():
                n += 1
                conn.execute("INSERT INTO orders (customer) VALUES (%s)", (f"load {n}",))
                conn.execute("UPDATE products SET price_cents = price_cents + 1 WHERE id = %s",
                             (1 + n % 200,))
                conn.execute("DELETE FROM order_items WHERE id = %s", (n,))
                self.written += 3
                behind = started + self.written / self.rate - time.monotonic()
                if behind > 0:
                    time.sleep(behind)
        self.seconds = time.monotonic() - started


def one_window(cluster: Cluster, mode: str, rate: float, folder: Path) -> dict[str, Any]:
    dbname = f"shop_{mode}"
    prod = demo.create_shop(cluster, dbname)
    if gigabytes := float(os.environ.get("BENCH_GB", "0")):
        grow(prod, gigabytes)
    staging = demo.create_shop(cluster, f"{dbname}_staging")
    config = windows.write(folder, "swap")
    config.write_text(config.read_text().replace(
        "jobs = 2\n", f'jobs = 2\nfollow = "{mode}"\n', 1).replace(
        "touch maintenance.on", "sleep 0.5 && touch maintenance.on"))
    url = cluster.url(dbname, user=ROLE, password=PASSWORD)
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_URL_STAGING": staging, "NO_COLOR": "1"}
    writer = Writer(prod, rate, folder / "maintenance.on")
    writer.start()
    time.sleep(1.0)  # writing before the window starts, as a shop does
    try:
        result = windows.run(config, env, mode)
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "--json", "--config", str(config)],
        cwd=folder, env=env, capture_output=True, text=True, check=False).stdout or "{}")
    retained = f"{dbname}_failed_{status.get('run_id')}"
    cluster.psql(f"ALTER DATABASE {retained} ALLOW_CONNECTIONS true")
    lost = {table: _rows_missing(cluster, retained, dbname, table) for table in COLUMNS}
    follow = status.get("follow") or {}
    return {"mode": mode, "exit_code": result.exit_code, "writes": writer.written,
            "writes_per_s": round(writer.written / max(writer.seconds, 0.001)),
            "lost": lost, "catch_up_s": follow.get("catch_up_s"),
            "pieces": {k.removesuffix("_s"): v for k, v in
                       result.events.get("standby_caught_up", {}).items()
                       if k.endswith("_s") and k != "catch_up_s"},
            "follow": follow.get("state"), "reason": follow.get("reason", ""),
            "gap": (status.get("rollback") or {}).get("write_gap")}


def grow(url: str, gigabytes: float) -> None:
    """The shop's orders grown to about ``gigabytes`` GiB (rows of ~450 bytes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (customer, placed_at) SELECT 'bulk ' || i ||"
                     " repeat('x', 400), now() FROM generate_series(1, %s) i",
                     (int(gigabytes * 2_200_000),))
        conn.execute("VACUUM (ANALYZE)")


def _rows_missing(cluster: Cluster, retained: str, production: str, table: str) -> int:
    """Rows of the retained database (production at the banner) that production, rolled
    back, does not hold as they were: inserted, updated or deleted rows lost."""
    columns = COLUMNS[table]
    query = f"SELECT md5(({columns})::text) FROM {table}"
    at_banner = set(cluster.psql(query, dbname=retained).splitlines())
    now = set(cluster.psql(query, dbname=production).splitlines())
    return len(at_banner ^ now)


def main() -> int:
    rate = float(os.environ.get("BENCH_WRITES", "300"))
    cluster = Cluster().init().start()
    work = Path(tempfile.mkdtemp(prefix="window-bench-follow-"))
    try:
        cluster.psql(f"CREATE ROLE {ROLE} LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'")
        found = [one_window(cluster, mode, rate, work / mode) for mode in ("auto", "off")]
    finally:
        cluster.destroy()
    print(f"\n{'follow':<8} {'writes/s':>9} {'writes':>7} {'rows lost':>10} "
          f"{'at banner':>10}  standby")
    for row in found:
        lost = sum(row["lost"].values())
        added = f"{row['catch_up_s']:.2f} s" if row["catch_up_s"] is not None else "-"
        pieces = ", ".join(f"{k} {v:.3f}" for k, v in row["pieces"].items())
        print(f"{row['mode']:<8} {row['writes_per_s']:>9} {row['writes']:>7} {lost:>10}"
              f" {added:>10}  {row['follow']}: {row['reason'] or 'caught up'}"
              + (f" ({pieces})" if pieces else ""))
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
