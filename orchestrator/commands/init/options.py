"""What ``window init`` writes from: the options given, checked before anything is written
(each value goes into TOML, YAML and a shell)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import UsageError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SAFE_DIR = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
# What a shell can export and GitHub accepts as a secret's name.
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# "20", "v20.11.1", "lts/iron", ">=20 <21", "^20.11", "20.x": what actions/setup-node reads.
_NODE = re.compile(r"[A-Za-z0-9.*^~<>=|/-]+( +[A-Za-z0-9.*^~<>=|/-]+)*")
PackageManager = Literal["pnpm", "npm", "yarn"]
Banner = Literal["file", "ssh", "http"]
BANNERS: tuple[Banner, ...] = ("file", "ssh", "http")
DEFAULT_PG_VERSION = 17
PRODUCTION_ENV = "DATABASE_URL"
STAGING_ENV = "DATABASE_URL_STAGING"
RUNNER = {"pnpm": "pnpm", "npm": "npx", "yarn": "yarn"}
INSTALL = {"pnpm": "pnpm install --frozen-lockfile", "npm": "npm ci",
           "yarn": "yarn install --frozen-lockfile"}


@dataclass(frozen=True)
class Options:
    name: str
    phrase: str
    prisma: bool = False
    package_manager: PackageManager | None = None
    workdir: str | None = None
    pg_version: int = DEFAULT_PG_VERSION
    production_env: str = PRODUCTION_ENV
    # None: the default name in url mode, none at all in clone mode (a clone beside production)
    staging_env: str | None = None
    clone: bool = False
    banner: Banner = "file"
    node_version: str | None = None
    # The package.json whose "packageManager" names pnpm's version, from the root.
    pinned_manager: str | None = None

    def __post_init__(self) -> None:
        for key, value in (("--name", self.name), ("--phrase", self.phrase)):
            if not _SAFE.fullmatch(value):
                raise UsageError(f"{key} {value!r} may hold only letters, digits, '.', '_'"
                                 " and '-' (it goes into TOML, YAML and a shell).")
        if self.workdir is not None and (not _SAFE_DIR.fullmatch(self.workdir)
                                         or ".." in self.workdir.split("/")):
            raise UsageError(f"--workdir {self.workdir!r} must be a plain relative folder"
                             " such as frontend or apps/web.")
        for key, env in (("--production-env", self.production_env),
                         ("--staging-env", self.staging_env)):
            if env is not None and (not _ENV.fullmatch(env) or env.upper().startswith("GITHUB_")):
                raise UsageError(f"{key} {env!r} must name a secret GitHub accepts, such as"
                                 " DATABASE_URL_PROD (letters, digits and '_', not GITHUB_...).")
        if self.staging_env is not None and self.staging_env == self.production_env:
            raise UsageError("--staging-env must differ from --production-env: staging is"
                             " never production.")
        if not 10 <= self.pg_version <= 99:
            raise UsageError(f"--pg-version {self.pg_version} is not a PostgreSQL major"
                             " version such as 16 or 17.")
        if self.banner not in BANNERS:
            raise UsageError(f"--banner must be one of {', '.join(BANNERS)}.")
        if self.node_version is not None and not _NODE.fullmatch(self.node_version):
            raise UsageError(f"the Node version {self.node_version!r} (from .nvmrc,"
                             " .node-version or package.json engines) cannot be used; fix it.")

    @property
    def page(self) -> str:
        """Where a ``file`` banner writes its page: the app's public folder."""
        return self.inside("public/maintenance.html")

    def inside(self, path: str) -> str:
        """A path of the project, from the repository root (where window.toml lives)."""
        return f"{self.workdir}/{path}" if self.workdir else path

    @property
    def staging_variable(self) -> str | None:
        """The staging database's variable; None in clone mode without one (the copy is
        restored beside production: no staging database is needed anywhere)."""
        if self.staging_env is not None:
            return self.staging_env
        return None if self.clone else STAGING_ENV

    @property
    def runner(self) -> str:
        return RUNNER[self.package_manager or "npm"]

    @property
    def secrets(self) -> list[str]:
        """Every secret the workflow reads, in the order the README lists them."""
        names = [self.production_env]
        if self.staging_variable:
            names.append(self.staging_variable)
        if self.banner == "ssh":
            names += list(SSH_SECRETS)
        return names


# The ssh banner's secrets: the private key, the host's line of known_hosts, user@host.
SSH_SECRETS = ("BANNER_SSH_KEY", "BANNER_SSH_KNOWN_HOSTS", "BANNER_SSH_TARGET")


# What the fleet's jobs read the S3 state with (the runner is gone after each job).
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_FLEET_FILE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.toml")


@dataclass(frozen=True)
class FleetOptions:
    """The fleet's workflow: ``options`` for what every job sets up (the phrase, Python, the
    PostgreSQL client, Node), the fleet file from the repository root, the variables its
    targets' URLs come from, and how many targets run at once."""

    options: Options
    fleet_file: str
    target_secrets: tuple[str, ...]
    concurrency: int

    def __post_init__(self) -> None:
        if not _FLEET_FILE.fullmatch(self.fleet_file) or ".." in self.fleet_file.split("/"):
            raise UsageError(f"--fleet {self.fleet_file!r} must be a .toml file inside this"
                             " folder, such as fleet.toml or ops/fleet.toml.")
        for env in self.target_secrets:
            if not _ENV.fullmatch(env) or env.upper().startswith("GITHUB_"):
                raise UsageError(f"the fleet reads {env!r}, which GitHub cannot hold as a"
                                 " secret (letters, digits and '_', not GITHUB_...).")

    @property
    def secrets(self) -> list[str]:
        return [*self.target_secrets, *AWS_SECRETS]
