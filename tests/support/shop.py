"""One test's shop: production and staging databases on the session's private cluster, and
the project (a folder with window.toml) that migrates them; every window a real subprocess.

The ``shop`` fixture (tests/integration/conftest.py) makes one per test. The migrate commands
and data the integration tests share live here too, so that no test module imports another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster
from tests.support.waiting import wait_until

# The migration, then (on production, once) a command that sleeps until killed; its pid in
# sleeper.pid (Shop.start_until_sleeping waits for it).
SLOW_ON_PRODUCTION = (
    'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
    'if [ "$WINDOW_PHASE" = migrate ] && [ ! -f attempted ]; then touch attempted; '
    "sleep 120 & echo $! > sleeper.pid; wait; fi"
)
# On production only: the migration's first statement lands, then it fails (``{extra}``
# runs in between).
FAIL_ON_PRODUCTION = """
psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" || exit 1
[ "$WINDOW_PHASE" = migrate ] || exit 0
{extra}
exit 1
"""

# For failing_migration: the standby copy dropped, so that the rollback restores the archive.
DROP_STANDBY = ('psql -X -q "${DATABASE_URL%/*}/postgres" -c'
                ' "DROP DATABASE \\"${DB}_window_${WINDOW_RUN_ID}\\" WITH (FORCE)"')


@dataclass
class Shop:
    """One test's production and staging databases and the project that migrates them."""

    cluster: Cluster
    folder: Path
    prod_db: str
    staging_db: str
    prod_url: str
    staging_url: str
    config: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DATABASE_URL": self.prod_url,
                    "DATABASE_URL_STAGING": self.staging_url, "NO_COLOR": "1"}

    def configure(self, migration_sql: str = demo.GOOD_MIGRATION, **overrides: Any) -> Path:
        overrides.setdefault("banner_on", "echo on >> banner.log && touch maintenance.on")
        overrides.setdefault("banner_off", "echo off >> banner.log && rm -f maintenance.on")
        self.config = demo.write_project(self.folder, migration_sql, **overrides)
        return self.config

    def window(self, *args: str, timeout: float = 120, **kwargs: Any
               ) -> subprocess.CompletedProcess[str]:
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self._argv(args), cwd=self.folder, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False, **kwargs)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A window in the background; its output goes to a file (a pipe could fill up)."""
        with (self.folder.parent / "background.log").open("a") as out:
            process = subprocess.Popen(self._argv(args), cwd=self.folder, env=self.env,
                                       text=True, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """A test that failed half-way must not leave a window running into the next one."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)

    def start_until_sleeping(self) -> tuple[subprocess.Popen[str], int]:
        """A window in the background, once its command sleeps (it writes sleeper.pid); the
        process and the sleeping command's pid."""
        window = self.start("run", "--confirm", demo.PHRASE)
        pid = self.folder / "sleeper.pid"
        # Written, not just made: the shell creates the file before echo fills it.
        wait_until(lambda: pid.exists() and pid.read_text().strip().isdigit(),
                   "sleeper.pid holding a pid")
        return window, int(pid.read_text())

    def background_output(self) -> str:
        return (self.folder.parent / "background.log").read_text()

    def run_window(self, *extra: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.window("run", "--confirm", demo.PHRASE, *extra, **kwargs)

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "orchestrator", *args]

    def status(self) -> dict[str, Any]:
        done = self.window("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def phase(self, name: str) -> dict[str, Any]:
        return next(p for p in self.status()["phases"] if p["name"] == name)

    def fingerprint(self, url: str | None = None) -> dict[str, dict[str, Any]]:
        return demo.fingerprint(url or self.prod_url)

    def schema(self, dbname: str | None = None) -> str:
        done = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "-h", "127.0.0.1", "-p",
             str(self.cluster.port), "-U", "postgres", dbname or self.prod_db],
            env={**os.environ, "PGPASSWORD": self.cluster.password}, capture_output=True,
            text=True, check=True)
        # \restrict lines carry a random key per dump; comments name versions.
        return "\n".join(line for line in done.stdout.splitlines()
                         if not line.startswith(("\\restrict", "\\unrestrict", "--")))

    def sql(self, query: str, url: str | None = None) -> Any:
        with psycopg.connect(url or self.prod_url, autocommit=True) as conn:
            row = conn.execute(query).fetchone()  # type: ignore[arg-type]
            return row[0] if row else None

    def has_column(self, table: str, column: str, url: str | None = None) -> bool:
        return bool(self.sql(
            "SELECT count(*) FROM information_schema.columns"
            f" WHERE table_name = '{table}' AND column_name = '{column}'", url))

    def banner_log(self) -> list[str]:
        log = self.folder / "banner.log"
        return log.read_text().split() if log.exists() else []

    def databases(self, like: str) -> list[str]:
        names = self.cluster.psql(
            f"SELECT datname FROM pg_database WHERE datname LIKE '{like}' ORDER BY 1")
        return names.split() if names else []

    def wait_for(self, path: str, seconds: float = 60) -> None:
        wait_until((self.folder / path).exists, f"{path} appearing", seconds)


def add_free_sample(url: str) -> None:
    """A row staging never saw: demo.BAD_MIGRATION passes its rehearsal and trips on the
    database at ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO products (name, price_cents) VALUES ('free sample', 0)")


def failing_migration(shop: Shop, *extra: str, **overrides: str) -> None:
    """The shop migrated by FAIL_ON_PRODUCTION (``extra`` lines run before it fails)."""
    script = FAIL_ON_PRODUCTION.format(extra="\n".join(extra))
    shop.configure(demo.GOOD_MIGRATION, migrate="DB=" + shop.prod_db + " sh migrate.sh",
                   **overrides)
    (shop.folder / "migrate.sh").write_text(script)
