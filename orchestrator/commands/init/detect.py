"""What ``window init`` reads from the project and, when it can, from production: where the
app lives, its package manager and Node version, and the server's PostgreSQL major version."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.commands.init.options import DEFAULT_PG_VERSION, PackageManager
from orchestrator.errors import WindowError
from orchestrator.postgres import pg

LOCKFILES: tuple[tuple[str, PackageManager], ...] = (
    ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), ("package-lock.json", "npm"))
PRISMA_PACKAGES = ("prisma", "@prisma/client")
SERVER_SECONDS = 3.0
_SKIPPED = {"node_modules", "vendor", "dist", "build"}


@dataclass(frozen=True)
class Project:
    """What the folder says; each field None where it says nothing."""

    workdir: str | None
    prisma: bool
    package_manager: PackageManager | None
    node_version: str | None
    # The package.json naming the package manager's version ("packageManager"), from the
    # root: pnpm/action-setup reads it there.
    pinned_manager: str | None


def project(root: Path, workdir: str | None = None) -> Project:
    """The app's folder (``workdir``, else the first that holds a Prisma schema or a
    package.json depending on prisma, else one holding a package.json), then what it uses."""
    found = workdir if workdir is not None else _workdir(root)
    app = root / found if found else root
    pinned = next((f.relative_to(root).joinpath("package.json").as_posix()
                   for f in (app, root) if "packageManager" in _package_json(f)), None)
    return Project(found, _uses_prisma(app), _package_manager(app, root), node_version(app),
                   pinned)


def _candidates(root: Path) -> list[Path]:
    """The root, then its folders two levels down (apps/web), dot-folders skipped."""
    level = [p for p in sorted(root.iterdir()) if _searched(p)]
    return [root, *level, *(q for p in level for q in sorted(p.iterdir()) if _searched(q))]


def _searched(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and path.name not in _SKIPPED


def _workdir(root: Path) -> str | None:
    folders = _candidates(root)
    chosen = next((f for f in folders if _uses_prisma(f)), None) or next(
        (f for f in folders if (f / "package.json").is_file()), None)
    return None if chosen is None or chosen == root else chosen.relative_to(root).as_posix()


def _package_json(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _uses_prisma(folder: Path) -> bool:
    if (folder / "prisma" / "schema.prisma").is_file():
        return True
    data = _package_json(folder)
    return any(isinstance(data.get(key), dict) and name in data[key]
               for key in ("dependencies", "devDependencies") for name in PRISMA_PACKAGES)


def _package_manager(app: Path, root: Path) -> PackageManager | None:
    """From the lockfile in the app's folder, else at the root (a workspace keeps one)."""
    for folder in (app, root):
        for lockfile, manager in LOCKFILES:
            if (folder / lockfile).is_file():
                return manager
    return None


def node_version(app: Path) -> str | None:
    """.nvmrc, else .node-version, else package.json ``engines.node``."""
    for name in (".nvmrc", ".node-version"):
        try:
            lines = (app / name).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        wanted = next((line.split("#", 1)[0].strip() for line in lines
                       if line.split("#", 1)[0].strip()), "")
        if wanted:
            return wanted
    engines = _package_json(app).get("engines")
    node = engines.get("node") if isinstance(engines, dict) else None
    return node.strip() if isinstance(node, str) and node.strip() else None


def server_major(variable: str) -> tuple[int, str]:
    """Production's PostgreSQL major version, asked of its server (the URL in ``variable``,
    for at most 3 s), and where the figure came from; the default when it cannot be asked."""
    url = os.environ.get(variable, "").strip()
    if not url:
        return DEFAULT_PG_VERSION, f"the default; ${variable} is not set"
    try:
        with pg.connect(pg.Db.from_url(url), time.time() + SERVER_SECONDS) as conn:
            return pg.server_major(conn), f"production's server (${variable})"
    except (WindowError, psycopg.Error, ValueError, UnicodeError):
        return DEFAULT_PG_VERSION, f"the default; production (${variable}) did not answer"
