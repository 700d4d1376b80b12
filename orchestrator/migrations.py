"""The migration tool's own record, read straight from its table with psycopg.

``prisma migrate status`` exits 1 alike when migrations are pending, when one failed and when
the database cannot be reached; the tool's table tells the three apart. It also says, against
the migration files, whether anything is left to do at all. The window only reads: resolving
a failed migration is a decision for the engineer, so a failure comes with the exact command
they may choose to run.
"""

from __future__ import annotations

import ast
import graphlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from orchestrator.config import MigrateSection, Settings
from orchestrator.errors import ConfigError

DEFAULT_TABLES = {
    "prisma": "_prisma_migrations",
    "alembic": "alembic_version",
    "flyway": "flyway_schema_history",
}
LOG_EXCERPT = 300


@dataclass(frozen=True)
class Failed:
    name: str
    logs: str
    fix: str  # what the engineer may run once they have decided; never run by the window

    def describe(self) -> str:
        logs = f" ({self.logs})" if self.logs else ""
        return f"{self.name} failed{logs}; to resolve it by hand: {self.fix}"


@dataclass(frozen=True)
class ToolState:
    tool: str
    table: str
    applied: tuple[str, ...]
    failed: tuple[Failed, ...]
    pending: tuple[str, ...] | None  # None: no [migrate] files to compare with
    unknown: tuple[str, ...] = ()  # recorded as applied, yet no file defines them

    def problems(self) -> list[str]:
        """What must not be there once the migration has run."""
        found = [f"{self.table}: {failed.describe()}" for failed in self.failed]
        if self.pending:
            found.append(f"{len(self.pending)} migration(s) still pending:"
                         f" {', '.join(self.pending)}")
        if self.unknown:
            found.append(f"{self.table} records {', '.join(self.unknown)}, which no migration"
                         " file defines")
        return found


def files(settings: Settings) -> Path | None:
    """The folder of migration files, if configured; a missing one is a config error (it
    would otherwise read as "nothing pending")."""
    if settings.migrate.files is None:
        return None
    folder = settings.path(settings.migrate.files)
    if not folder.is_dir():
        raise ConfigError(f"[migrate] files: {folder} is not a folder.")
    return folder


def read(conn: psycopg.Connection[Any], settings: MigrateSection, files: Path | None,
         schema: str | None = None) -> ToolState:
    """The tool's state in the connected database (an absent table: nothing applied yet)."""
    tool = settings.tool
    name = settings.table or DEFAULT_TABLES[tool]
    qualified = name if "." in name or schema is None else f"{schema}.{name}"
    found = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)", (qualified,)).fetchone()
    rows = conn.execute(sql.SQL(_QUERIES[tool]).format(sql.Identifier(*found))).fetchall() \
        if found else []
    return _READERS[tool](name, rows, files)


_QUERIES: dict[str, LiteralString] = {
    "prisma": "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL,"
              " coalesce(logs, '') FROM {} ORDER BY started_at, migration_name",
    "alembic": "SELECT version_num FROM {} ORDER BY version_num",
    "flyway": "SELECT coalesce(version, ''), description, type, success FROM {}"
              " ORDER BY installed_rank",
}


def _excerpt(logs: str) -> str:
    text = " ".join(logs.split())
    return text if len(text) <= LOG_EXCERPT else text[:LOG_EXCERPT - 3] + "..."


def _prisma(table: str, rows: list[tuple[Any, ...]], files: Path | None) -> ToolState:
    applied = tuple(name for name, finished, rolled_back, _ in rows
                    if finished and not rolled_back)
    failed = tuple(
        Failed(name, _excerpt(logs),
               f"prisma migrate resolve --rolled-back {name} (once its changes are undone;"
               f" --applied {name} if you completed it by hand)")
        for name, finished, rolled_back, logs in rows if not finished and not rolled_back)
    pending = None
    if files is not None:
        folders = sorted(p.parent.name for p in files.glob("*/migration.sql"))
        pending = tuple(name for name in folders if name not in applied)
    return ToolState("prisma", table, applied, failed, pending)


def _alembic(table: str, rows: list[tuple[Any, ...]], files: Path | None) -> ToolState:
    current = tuple(str(row[0]) for row in rows)
    if files is None:
        return ToolState("alembic", table, current, (), None)
    parents = alembic_revisions(files)
    unknown = tuple(rev for rev in current if rev not in parents)
    applied: set[str] = set()
    stack = [rev for rev in current if rev in parents]
    while stack:
        rev = stack.pop()
        if rev not in applied:
            applied.add(rev)
            stack.extend(p for p in parents[rev] if p in parents)
    order = graphlib.TopologicalSorter(
        {rev: [p for p in ps if p in parents] for rev, ps in parents.items()}).static_order()
    pending = tuple(rev for rev in order if rev not in applied)
    return ToolState("alembic", table, current, (), pending, unknown)


def alembic_revisions(folder: Path) -> dict[str, tuple[str, ...]]:
    """Each revision in a versions folder with the revisions it follows, read with Python's
    own parser (revision ids are plain assignments in each script)."""
    graph: dict[str, tuple[str, ...]] = {}
    for script in sorted(folder.rglob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            target, value = _assignment(node)
            if target in ("revision", "down_revision") and value is not None:
                try:
                    values[target] = ast.literal_eval(value)
                except ValueError:
                    continue
        if isinstance(values.get("revision"), str):
            down = values.get("down_revision")
            parents = (down,) if isinstance(down, str) else tuple(down or ())
            graph[values["revision"]] = tuple(str(p) for p in parents)
    return graph


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


_FLYWAY_FILE = re.compile(r"^V(?P<version>[0-9][0-9._]*)__(?P<description>.+)\.sql$")


def flyway_version(text: str) -> tuple[int, ...]:
    """Flyway's ordering: 1_1 is 1.1, and 1.01 is 1.1 (parts compare as numbers)."""
    return tuple(int(part) for part in re.split(r"[._]", text.strip("._")) if part)


def _flyway(table: str, rows: list[tuple[Any, ...]], files: Path | None) -> ToolState:
    applied = tuple(version for version, _, kind, success in rows
                    if success and version and kind != "BASELINE")
    failed = tuple(
        Failed(f"V{version}__{description}" if version else str(description), "success = false",
               "flyway repair (removes the failed entry once its changes are undone)")
        for version, description, _, success in rows if not success)
    pending = None
    if files is not None:
        baselines = [flyway_version(v) for v, _, kind, _ in rows if kind == "BASELINE" and v]
        floor = max(baselines, default=())
        done = {flyway_version(v) for v in applied}
        scripts = sorted(
            (flyway_version(m["version"]), path.name) for path in files.rglob("V*__*.sql")
             if (m := _FLYWAY_FILE.match(path.name)))
        pending = tuple(name for version, name in scripts
                        if version not in done and version > floor)
    return ToolState("flyway", table, applied, failed, pending)


_READERS = {"prisma": _prisma, "alembic": _alembic, "flyway": _flyway}
