"""A private PostgreSQL cluster for the session, and a fresh shop (production + staging +
a git checkout with window.toml) for each test. Every window runs as a real subprocess."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    server = Cluster().init().start()
    try:
        yield server
    finally:
        server.destroy()


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
        end = time.monotonic() + 60
        while not (pid.exists() and pid.read_text().strip().isdigit()):  # written, not just made
            assert time.monotonic() < end, "sleeper.pid never held a pid"
            time.sleep(0.05)
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
        end = time.monotonic() + seconds
        while not (self.folder / path).exists():
            assert time.monotonic() < end, f"{path} never appeared"
            time.sleep(0.05)


@pytest.fixture
def shop(cluster: Cluster, tmp_path: Path) -> Iterator[Shop]:
    n = next(_names)
    prod, staging = f"shop{n}", f"shop{n}_staging"
    staging_url = demo.create_shop(cluster, staging)
    prod_url = demo.create_shop(cluster, prod)
    made = Shop(cluster, tmp_path / "project", prod, staging, prod_url, staging_url)
    made.configure()
    yield made
    made.stop_all()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
