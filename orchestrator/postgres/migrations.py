"""The migration tool's own record, read straight from its table with psycopg.

``prisma migrate status`` exits 1 alike when migrations are pending, when one failed and when
the database cannot be reached; the tool's table tells the three apart. It also says, against
the migration files, whether anything is left to do at all. The window only reads: resolving
a failed migration is a decision for the engineer, so a failure comes with the exact command
they may choose to run. A migration file the tool itself would choke on is the engineer's to
fix before any window: a ConfigError naming the file, never a traceback.
"""

from __future__ import annotations

import ast
import graphlib
import hashlib
import importlib.util
import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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

    def describe(self, *, rolled_back: bool = False) -> str:
        """What failed and how to resolve it by hand; on production about to be rolled
        back, only should the rollback not take the record away with the rest."""
        logs = f" ({self.logs})" if self.logs else ""
        when = ("the rollback takes this record away with the rest; only if production keeps"
                " it, resolve it by hand" if rolled_back else "to resolve it by hand")
        return f"{self.name} failed{logs}; {when}: {self.fix}"


@dataclass(frozen=True)
class ToolState:
    tool: str
    table: str
    applied: tuple[str, ...]
    failed: tuple[Failed, ...]
    # None: nothing to compare with, either no [migrate] files or, for Alembic, a recorded
    # revision the files do not define (then ``unknown`` names it and no window may start:
    # the files are the wrong folder or branch, so what is pending cannot be known).
    pending: tuple[str, ...] | None
    unknown: tuple[str, ...] = ()  # recorded as applied, yet no file defines them
    # Prisma: the sha256 it recorded of each applied migration.sql (the clinic compares).
    checksums: Mapping[str, str] = field(default_factory=dict, compare=False)

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


@dataclass(frozen=True)
class Folder:
    """The migration files' folder; messages name files as configured (alembic/versions/x.py),
    not by the absolute path the window resolved."""

    path: Path
    label: str

    def error(self, file: Path | None, problem: str) -> ConfigError:
        where = self.label if file is None else \
            str(PurePosixPath(self.label, file.relative_to(self.path).as_posix()))
        return ConfigError(f"[migrate] files: {where} {problem}.")

    def text(self, file: Path, decode: Callable[[bytes], str] = bytes.decode) -> str:
        """The file's text, decoded as its tool decodes it (UTF-8 unless told otherwise)."""
        try:
            return decode(file.read_bytes())
        except OSError as exc:
            raise self.error(file, f"cannot be read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise self.error(file, f"cannot be read: it is not {exc.encoding} (byte"
                                   f" {exc.object[exc.start]:#04x} at offset {exc.start})") from exc
        except SyntaxError as exc:  # a Python coding line that names no codec
            raise self.error(file, f"cannot be read: {exc.msg}") from exc


def files(settings: Settings) -> Path | None:
    """The folder of migration files, if configured; a missing one is a config error (it
    would otherwise read as "nothing pending")."""
    if settings.migrate.files is None:
        return None
    folder = settings.path(settings.migrate.files)
    if not folder.is_dir():
        raise ConfigError(f"[migrate] files: {folder} is not a folder.")
    return folder


# What each tool runs, under [migrate] files (a rehearsal's fingerprint covers exactly these).
_RUN_FILES: dict[str, Callable[[PurePosixPath], bool]] = {
    "prisma": lambda rel: len(rel.parts) == 2 and rel.name == "migration.sql",
    "alembic": lambda rel: rel.suffix == ".py",
    "flyway": lambda rel: rel.suffix == ".sql",
    "none": lambda rel: rel.suffix == ".sql",
}


def fingerprint(settings: Settings) -> str | None:
    """sha256 over what a rehearsal rehearsed: the files the tool runs (names and contents,
    symlinked folders followed; caches and hidden files left out, as an import or an editor
    writes them) and the settings that decide how they run. None without ``[migrate] files``.
    """
    folder = files(settings)
    if folder is None:
        return None
    section = settings.migrate
    digest = hashlib.sha256(json.dumps(
        [section.command, section.workdir, section.tool, settings.staging.mode,
         settings.staging.clone_on]).encode())
    for path in _run_files(folder, _RUN_FILES[section.tool]):
        name = path.relative_to(folder).as_posix().encode()
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"[migrate] files: {name.decode()} cannot be read"
                              f" ({exc.strerror or exc}).") from exc
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)) + content)
    return digest.hexdigest()


def sql_files(folder: Path) -> list[Path]:
    """A folder's plain SQL files (``tool = "none"``), in name order."""
    return _run_files(folder, _RUN_FILES["none"])


def _run_files(folder: Path, runs: Callable[[PurePosixPath], bool]) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in names:
            path = Path(root, name)
            if not name.startswith(".") and runs(PurePosixPath(path.relative_to(folder))):
                found.append(path)
    return sorted(found)


def read(conn: psycopg.Connection[Any], settings: MigrateSection, files: Path | None,
         schema: str | None = None) -> ToolState:
    """The tool's state in the connected database (an absent table: nothing applied yet)."""
    tool = settings.tool
    name = settings.table or DEFAULT_TABLES[tool]
    found = _locate(conn, name, schema)
    rows = conn.execute(sql.SQL(_QUERIES[tool]).format(sql.Identifier(*found))).fetchall() \
        if found else []
    folder = None if files is None else Folder(files, settings.files or str(files))
    return _READERS[tool](name, rows, folder)


def read_configured(conn: psycopg.Connection[Any], settings: Settings, schema: str | None
                    ) -> ToolState:
    """``read`` as the window's config says: its tool, its table, its migration files."""
    return read(conn, settings.migrate, files(settings), schema)


def _locate(conn: psycopg.Connection[Any], name: str, schema: str | None
            ) -> tuple[str, str] | None:
    """The tool's table as (schema, name). A schema from the URL (Prisma's ?schema=TenantA)
    is a name as the tool quotes it: to_regclass would fold it to tenanta and miss "TenantA"
    or fail on "my-app". A qualified [migrate] table, or no schema at all, is SQL as the user
    wrote it, found like the tool's own unqualified queries are (search_path)."""
    lookup = "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n" \
             " ON n.oid = c.relnamespace WHERE "
    if schema is not None and "." not in name:
        row = conn.execute(lookup + "n.nspname = %s AND c.relname = %s", (schema, name))
    else:
        row = conn.execute(lookup + "c.oid = to_regclass(%s)", (name,))
    found = row.fetchone()
    return (str(found[0]), str(found[1])) if found else None


_QUERIES: dict[str, LiteralString] = {
    "prisma": "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL,"
              " coalesce(logs, ''), checksum FROM {} ORDER BY started_at, migration_name",
    "alembic": "SELECT version_num FROM {} ORDER BY version_num",
    "flyway": "SELECT installed_rank, version, description, type, checksum, success FROM {}"
              " ORDER BY installed_rank",
}


def _excerpt(logs: str) -> str:
    text = " ".join(logs.split())
    return text if len(text) <= LOG_EXCERPT else text[:LOG_EXCERPT - 3] + "..."


def _prisma(table: str, rows: list[tuple[Any, ...]], folder: Folder | None) -> ToolState:
    done = {name: str(checksum) for name, finished, rolled_back, _, checksum in rows
            if finished and not rolled_back}
    failed = tuple(
        Failed(name, _excerpt(logs),
               f"prisma migrate resolve --rolled-back {name} (once its changes are undone;"
               f" --applied {name} if you completed it by hand)")
        for name, finished, rolled_back, logs, _ in rows if not finished and not rolled_back)
    pending = None
    if folder is not None:
        pending = tuple(name for name in prisma_migrations(folder) if name not in done)
    return ToolState("prisma", table, tuple(done), failed, pending, checksums=done)


def prisma_migrations(folder: Folder) -> tuple[str, ...]:
    """Prisma's migration folders, in the order it applies them (by name)."""
    names = tuple(sorted(p.parent.name for p in folder.path.glob("*/migration.sql")))
    if not names:
        raise folder.error(None, "holds no <name>/migration.sql migration folder")
    return names


def _alembic(table: str, rows: list[tuple[Any, ...]], folder: Folder | None) -> ToolState:
    current = tuple(str(row[0]) for row in rows)
    if folder is None:
        return ToolState("alembic", table, current, (), None)
    parents = alembic_revisions(folder)
    unknown = tuple(rev for rev in current if rev not in parents)
    if unknown:  # wrong folder or branch: listing every revision as pending would mislead
        return ToolState("alembic", table, current, (), None, unknown)
    applied: set[str] = set()
    stack = list(current)
    while stack:
        rev = stack.pop()
        if rev not in applied:
            applied.add(rev)
            stack.extend(p for p in parents[rev] if p in parents)
    return ToolState("alembic", table, current, (),
                     tuple(rev for rev in parents if rev not in applied))


def alembic_revisions(folder: Folder) -> dict[str, tuple[str, ...]]:
    """Each revision in a versions folder with the revisions it follows, parents first, read
    with Python's own parser (revision ids are plain assignments in each script). A script
    with no ``revision`` (a helper) is not a migration; one Alembic could not load is an
    error, as is a folder with no revision at all."""
    graph: dict[str, tuple[str, ...]] = {}
    for script in sorted(folder.path.rglob("*.py")):
        source = folder.text(script, importlib.util.decode_source)  # BOM, coding line: as imported
        try:
            body = ast.parse(source, filename=script.name).body
        except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte, on older Pythons
            line = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            problem = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            raise folder.error(script, f"cannot be read: {problem}{line}") from exc
        values: dict[str, Any] = {}
        for node in body:
            target, value = _assignment(node)
            if target in ("revision", "down_revision") and value is not None:
                try:
                    values[target] = ast.literal_eval(value)
                except ValueError:
                    continue
        if "revision" not in values:
            continue
        revision, down = values["revision"], values.get("down_revision")
        if not isinstance(revision, str):
            raise folder.error(script, f"cannot be read: revision = {revision!r} is not a"
                                       " revision id (a string)")
        parents = _parents(down)
        if parents is None:
            raise folder.error(script, f"cannot be read: down_revision = {down!r} is neither"
                                       " None, a revision id nor a tuple of them")
        graph[revision] = parents
    if not graph:
        raise folder.error(None, "holds no Alembic revision (a script assigning revision)")
    try:
        order = tuple(graphlib.TopologicalSorter(
            {rev: [p for p in ps if p in graph] for rev, ps in graph.items()}).static_order())
    except graphlib.CycleError as exc:
        raise folder.error(None, "holds revisions that follow each other in a cycle:"
                                 f" {' -> '.join(exc.args[1])}") from exc
    return {rev: graph[rev] for rev in order}


def _parents(down: object) -> tuple[str, ...] | None:
    """down_revision as Alembic takes it: None, one id, or several (a merge); None if not."""
    if down is None:
        return ()
    if isinstance(down, str):
        return (down,)
    if isinstance(down, tuple | list) and all(isinstance(p, str) for p in down):
        return tuple(down)
    return None


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


# Flyway's default naming: V<version>__<description>.sql and R__<description>.sql; the
# version runs to the first "__", and "_" in a description stands for a space.
_VERSIONED = re.compile(r"V(?P<version>.*?)__(?P<description>.*)\.sql")
_REPEATABLE = re.compile(r"R__(?P<description>.*)\.sql")


def flyway_version(text: str) -> tuple[int, ...]:
    """Flyway's MigrationVersion: "_" reads as ".", parts compare as numbers (1.01 is 1.1) and
    trailing zero parts do not count (1.0 is 1). Anything else is no version: ValueError."""
    parts = re.split(r"\.(?=\d)", text.replace("_", "."))
    if not all(re.fullmatch(r"[0-9]+", part) for part in parts):
        raise ValueError(f"{text!r} is not a Flyway version (numbers separated by . or _)")
    numbers = [int(part) for part in parts]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def flyway_checksum(text: str) -> int:
    """The checksum Flyway records for a script (its ChecksumCalculator): CRC32 over each
    line's UTF-8 bytes, lines split as Java's BufferedReader.readLine does (\\n, \\r, \\r\\n
    only: not str.splitlines), a BOM dropped from the first line, as a signed 32-bit int.
    Line endings and blank lines thus never change it."""
    crc = 0
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text)):
        crc = zlib.crc32((line.removeprefix("\ufeff") if number == 0 else line).encode(), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def flyway_scripts(folder: Folder) -> tuple[dict[tuple[int, ...], str],
                                            dict[str, tuple[str, int]]]:
    """Versioned scripts by version, in order, and repeatable ones by description (what
    Flyway matches their history rows on), in order, each with its checksum. Two scripts with
    one version, or a version Flyway cannot read, are errors as they are to Flyway."""
    versioned: dict[tuple[int, ...], str] = {}
    repeatable: dict[str, tuple[str, int]] = {}
    for path in sorted(folder.path.rglob("*.sql")):
        if match := _VERSIONED.fullmatch(path.name):
            try:
                version = flyway_version(match["version"])
            except ValueError as exc:
                raise folder.error(path, f"cannot be read: version {exc}") from exc
            if version in versioned:
                raise folder.error(path, f"repeats the version of {versioned[version]}")
            versioned[version] = path.name
        elif match := _REPEATABLE.fullmatch(path.name):
            repeatable[match["description"].replace("_", " ")] = \
                (path.name, flyway_checksum(folder.text(path)))
    if not versioned and not repeatable:
        raise folder.error(None, "holds no V<version>__<name>.sql or R__<name>.sql script")
    return dict(sorted(versioned.items())), dict(sorted(repeatable.items()))


def _flyway(table: str, rows: list[tuple[Any, ...]], folder: Folder | None) -> ToolState:
    """Replays the history in installed_rank order, as Flyway does: a successful undo takes
    its version back out of what is applied (a later run puts it back), and a repeatable
    counts as applied only with the checksum of its latest successful run (a failed run is
    reported as failed, and `flyway repair` deletes it)."""
    applied: dict[tuple[int, ...], str] = {}
    checksums: dict[str, int | None] = {}  # a repeatable's description -> its latest run's
    failed: list[Failed] = []
    floor: tuple[int, ...] = ()  # the latest baseline: versions up to it count as applied
    for rank, version, description, kind, checksum, success in rows:
        if not success:
            failed.append(Failed(
                f"V{version}__{description}" if version else f"R__{description}",
                "success = false",
                "flyway repair (removes the failed entry once its changes are undone)"))
        elif version is None:
            checksums[description] = checksum
        elif kind != "SCHEMA":  # Flyway's record of creating the schema, not a migration
            try:
                number = flyway_version(version)
            except ValueError as exc:
                raise ConfigError(f"{table}: the row with installed_rank {rank} has a version"
                                  f" Flyway cannot read: {exc}.") from exc
            if kind == "BASELINE":
                floor = max(floor, number)
            elif kind.startswith("UNDO_"):
                applied.pop(number, None)
            else:
                applied[number] = version
    pending = None
    if folder is not None:
        versioned, repeatable = flyway_scripts(folder)
        pending = tuple(
            [name for number, name in versioned.items() if number not in applied
             and number > floor]
            + [name for description, (name, checksum) in repeatable.items()
               if checksums.get(description) != checksum])
    return ToolState("flyway", table, tuple(applied.values()), tuple(failed), pending)


_READERS = {"prisma": _prisma, "alembic": _alembic, "flyway": _flyway}


def named(names: list[str] | tuple[str, ...], most: int = 5) -> str:
    """Migration names for a sentence: the first few, and how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
