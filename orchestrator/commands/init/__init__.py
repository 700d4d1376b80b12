"""``window init``: a first window.toml and the GitHub Actions workflow that runs it, from
what the project says (where the app lives, its package manager, Node and Prisma) and, when
it answers, production's server (its PostgreSQL major version, for the client tools)."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.commands.init import detect, fleet_workflow
from orchestrator.commands.init.config_file import window_toml
from orchestrator.commands.init.options import (
    DEFAULT_PG_VERSION,
    PRODUCTION_ENV,
    Banner,
    FleetOptions,
    Options,
    PackageManager,
)
from orchestrator.commands.init.workflow import WORKFLOW, workflow
from orchestrator.errors import UsageError

__all__ = ["CONFIG", "DEFAULT_PG_VERSION", "GITIGNORED", "WORKFLOW", "FleetOptions", "Options",
           "notes", "options", "window_toml", "workflow", "write", "write_fleet"]

CONFIG = Path("window.toml")
# Dumps of customer data and the journal are one `git add -A` away from the repository.
GITIGNORED = (".window/", "backups/")


def default_name(folder: Path) -> str:
    """The folder's name as a window name: "shop" -> "shop-prod"."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-._")
            or "app") + "-prod"


def default_phrase(name: str) -> str:
    return f"{name.upper()}-OK"


def options(folder: Path, *, name: str | None = None, phrase: str | None = None,
            prisma: bool = False, package_manager: PackageManager | None = None,
            workdir: str | None = None, pg_version: int | None = None,
            production_env: str | None = None, staging_env: str | None = None,
            clone: bool = False, banner: Banner = "file") -> tuple[Options, list[str]]:
    """The options, what was not given read from the project (and production's server); and
    a line for each thing found, to be shown."""
    if workdir is not None:
        Options(name="x", phrase="x", workdir=workdir)  # refused before it is looked in
    found = detect.project(folder, workdir)
    said = []
    if found.workdir and workdir is None:
        said.append(f"the app lives in {found.workdir}/ ([migrate] workdir)")
    if found.prisma and not prisma:
        said.append("it uses Prisma (prisma migrate deploy, _prisma_migrations)")
    if found.package_manager and package_manager is None:
        said.append(f"{found.package_manager}, from its lockfile")
    if found.node_version and found.package_manager:
        said.append(f"Node {found.node_version}, from the project")
    production_env = production_env or PRODUCTION_ENV
    if pg_version is None:
        pg_version, source = detect.server_major(production_env)
        said.append(f"PostgreSQL client {pg_version} ({source}; --pg-version N to choose)")
    chosen_name = name or default_name(folder)
    return Options(
        name=chosen_name, phrase=phrase or default_phrase(chosen_name),
        prisma=prisma or found.prisma,
        package_manager=package_manager or found.package_manager, workdir=found.workdir,
        pg_version=pg_version, production_env=production_env, staging_env=staging_env,
        clone=clone, banner=banner, node_version=found.node_version,
        pinned_manager=found.pinned_manager), said


def notes(folder: Path, options: Options) -> list[str]:
    """What the written files still need from the project, said once they are written."""
    if options.banner != "file" or (folder / options.page).parent.is_dir():
        return []
    public = Path(options.page).parent
    return [f"{public}/ does not exist: the file banner writes its page there, which only a"
            " web server on the machine the window runs on can serve. Point [banner] path at"
            " the folder that server serves, or use --banner ssh or --banner http for a site"
            f" served elsewhere; plan and run refuse until {public}/ exists."]


def write(folder: Path, options: Options, *, force: bool = False) -> list[Path]:
    """Both files, or neither: nothing is overwritten without ``force``; then .gitignore
    keeps the state folder and the backups out of the repository."""
    paths = [folder / CONFIG, folder / WORKFLOW]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; pass --force to overwrite it.")
    paths[1].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(window_toml(options), encoding="utf-8")
    paths[1].write_text(workflow(options), encoding="utf-8")
    if ignore(folder):
        paths.append(folder / ".gitignore")
    return paths


def write_fleet(folder: Path, fleet: FleetOptions, *, force: bool = False) -> list[Path]:
    """The fleet's workflow (its fleet.toml and window.toml exist already), and .gitignore."""
    path = folder / fleet_workflow.FLEET_WORKFLOW
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fleet_workflow.workflow(fleet), encoding="utf-8")
    return [path, *([folder / ".gitignore"] if ignore(folder) else [])]


def ignore(folder: Path) -> bool:
    """Add what is missing of GITIGNORED to .gitignore (made if need be); whether it changed."""
    path = folder / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [entry for entry in GITIGNORED if entry.strip("/") not in present]
    if not missing:
        return False
    lead = "\n" if text and not text.endswith("\n") else ""
    path.write_text(text + lead + "# window: the journal and the backups (customer data)\n"
                    + "\n".join(missing) + "\n", encoding="utf-8")
    return True
