"""A stand-in for ``prisma migrate deploy``, run as the window's migrate command in tests.

It does what Prisma's schema engine does, as far as a window can tell: reads only
``DATABASE_URL`` (never ``PGOPTIONS``, which the engine ignores; Prisma's own ``schema``
parameter dropped for libpq), creates ``_prisma_migrations``, refuses with P3009 while a
failed migration is recorded, then applies each pending ``<folder>/migration.sql`` in name
order as one script (one implicit transaction), recording a row when it starts and
``finished_at`` when it succeeds; a failure leaves the row unfinished with its logs (P3018)
and stops.

    python -m tests.support.prisma_deploy prisma/migrations
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.parse
import uuid
from pathlib import Path

import psycopg

from tests.support.prisma import PRISMA_TABLE


def url_for_libpq(url: str) -> str:
    base, _, query = url.partition("?")
    kept = [pair for pair in query.split("&") if pair and not pair.startswith("schema=")]
    return f"{base}?{'&'.join(kept)}" if kept else base


def main(folder: Path) -> int:
    os.environ.pop("PGOPTIONS", None)  # the engine never reads it
    url = url_for_libpq(os.environ["DATABASE_URL"])
    options = urllib.parse.parse_qs(url.partition("?")[2]).get("options", [""])[0]
    print(f"Datasource \"db\": PostgreSQL (options: {options or 'none'})")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_TABLE)  # type: ignore[arg-type]
        failed = conn.execute("SELECT migration_name FROM _prisma_migrations WHERE finished_at"
                              " IS NULL AND rolled_back_at IS NULL").fetchall()
        if failed:
            print(f"Error: P3009\nmigrate found failed migrations in the target database:"
                  f" {', '.join(name for (name,) in failed)}", file=sys.stderr)
            return 1
        applied = {name for (name,) in conn.execute(
            "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL")}
        pending = sorted(d.name for d in folder.iterdir() if (d / "migration.sql").is_file()
                         and d.name not in applied)
        for name in pending:
            script = (folder / name / "migration.sql").read_bytes()
            row = str(uuid.uuid4())
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name)"
                         " VALUES (%s, %s, %s)", (row, hashlib.sha256(script).hexdigest(), name))
            try:
                conn.execute(script.decode())  # type: ignore[arg-type]  # one simple query
            except psycopg.Error as exc:
                conn.execute("UPDATE _prisma_migrations SET logs = %s WHERE id = %s",
                             (str(exc), row))
                print(f"Error: P3018\nA migration failed to apply. Migration name: {name}\n"
                      f"Database error: {exc}", file=sys.stderr)
                return 1
            conn.execute("UPDATE _prisma_migrations SET finished_at = now(),"
                         " applied_steps_count = 1 WHERE id = %s", (row,))
            print(f"Applying migration `{name}`")
    print("All migrations have been successfully applied.")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
