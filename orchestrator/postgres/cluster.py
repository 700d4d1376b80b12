"""A throwaway PostgreSQL cluster in a folder: for ``window demo`` and the test suite.

initdb on a free loopback port with password authentication over TCP (so every URL carries a
password, as production's do). initdb and postgres refuse to run as root, so as root they run
through ``runuser -u postgres``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from orchestrator.errors import WindowError
from orchestrator.postgres import tools

SUPERUSER = "postgres"


class ClusterError(WindowError):
    """The throwaway cluster could not be made (no server binaries, initdb failed)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres (they must come from one install)."""
    for program in tools.candidates("pg_ctl"):
        folder = program.resolve().parent
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise ClusterError("PostgreSQL server programs (initdb, pg_ctl, postgres) were not found"
                       " on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL.")


def _install_dirs(folder: Path) -> tuple[Path, Path]:
    """The share and library folders of the install whose programs are in ``folder``."""
    pg_config = folder / "pg_config"
    if pg_config.exists():
        found = subprocess.run([str(pg_config), "--sharedir", "--pkglibdir"], capture_output=True,
                               text=True, check=False, timeout=30).stdout.split()
        if len(found) == 2:
            return Path(found[0]), Path(found[1])
    return folder.parent / "share", folder.parent / "lib"


def ships_extension(folder: Path, name: str) -> bool:
    """Whether the install in ``folder`` has ``name``'s control file and library: a server told
    to preload a library it lacks does not start."""
    share, lib = _install_dirs(folder)
    return (share / "extension" / f"{name}.control").exists() and any(lib.glob(f"{name}.*"))


SECOND_ADDRESS = "127.0.0.2"
LISTEN = f"127.0.0.1,{SECOND_ADDRESS}"


class Cluster:
    def __init__(self, root: Path | None = None,
                 password: str = "s3cr3t:p@ss/w%rd") -> None:  # noqa: S107 - throwaway
        # The postgres user must be able to reach the folder: mkdtemp makes it 0700 for root.
        self.root = root or Path(tempfile.mkdtemp(prefix="window-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.password = password
        self.port = free_port()
        self.bin = bindir()
        self._as_root = os.geteuid() == 0

    def url(self, dbname: str = "postgres", user: str = SUPERUSER,
            password: str | None = None) -> str:
        secret = quote(password if password is not None else self.password, safe="")
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self._as_root else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False,
                              timeout=120)
        if check and done.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} failed: {done.stderr.strip()}")
        return done

    def init(self) -> Cluster:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(self.root, SUPERUSER)
            shutil.chown(pwfile, SUPERUSER)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SECOND_ADDRESS}/32 scram-sha-256\n")
        with (self.data / "postgresql.conf").open("a") as conf:
            # A second loopback address: the same database under another name, as a staging
            # URL that reaches production would have it (the tests' identity cases).
            conf.write(f"\nlisten_addresses = '{LISTEN}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 100\nshared_buffers = 128MB\n"
                       # Logical replication on production: CDC consumers, subscriptions.
                       "wal_level = logical\nmax_replication_slots = 40\n"
                       "max_wal_senders = 40\nmax_logical_replication_workers = 16\n"
                       "max_worker_processes = 24\n")
            if ships_extension(self.bin, "pg_stat_statements"):
                # What the performance baseline reads for production's busiest statements.
                conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
        return self

    def start(self) -> Cluster:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through the real psql as the superuser; stdout, or CalledProcessError."""
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", SUPERUSER, "-d", dbname, "-c", sql],
            capture_output=True, text=True, check=True, env=env, timeout=120)
        return done.stdout.strip()

    def wait_ready(self, seconds: float = 30.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                               str(self.port)], capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise ClusterError(f"PostgreSQL on port {self.port} did not become ready")
