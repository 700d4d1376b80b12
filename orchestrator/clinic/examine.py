"""The migration clinic: lint what the window is about to migrate, before the rehearsal.

The first users' runbook credits its "Migration Clinic" with seven bugs caught before they
reached production: a table altered before it was created, a foreign key to a missing
parent, a column added twice, Prisma CLI output pasted into SQL, a loose ``.sql`` file that
never ran, DDL that failed on re-run. Errors stop the window (exit 3) before anything runs;
warnings are shown and journaled. ``window lint`` runs the clinic alone.

The pending migrations are linted (syntax, CLI output, statements that change the cluster
rather than the database, idempotency, squawk); the order rules replay the whole history in
the tool's order, because a table created by a later migration only shows across files;
applied Prisma migrations are held to their recorded checksum.
Without the tool's table (no database reachable) every file counts as pending. Alembic's
migrations are Python, and the clinic reads SQL: it has nothing to say about them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import psycopg
import structlog

from orchestrator.clinic import cluster_level, prisma, sql, squawk
from orchestrator.clinic.findings import Finding, Migration
from orchestrator.config import Settings
from orchestrator.engine import gates
from orchestrator.errors import ConfigError, ExitCode, GateRefused, PhaseFailed
from orchestrator.postgres import migrations, pg
from orchestrator.redact import redact

__all__ = ["RULES", "Finding", "examine", "gate", "history", "lint", "shown", "summary"]

RULES = ("prisma-loose-sql", "prisma-unused-sql", "prisma-cli-output",
         "prisma-checksum-changed", "migration-order", "table-used-before-created",
         "foreign-key-to-later-table", "created-twice", "column-added-twice", "cluster-level",
         "missing-if-not-exists", "sql-syntax", "squawk:<rule>", "squawk-missing",
         "squawk-failed")
_OWN_RULES = tuple(rule for rule in RULES if not rule.startswith("squawk"))
SQL_TOOLS = ("prisma", "flyway", "none")


def history(settings: Settings, state: migrations.ToolState | None) -> list[Migration]:
    """Every migration file in the order the tool applies them, each marked pending unless
    the tool's table says it is applied (no table: all pending)."""
    path = migrations.files(settings)
    if path is None or settings.migrate.tool not in SQL_TOOLS:
        return []
    folder = migrations.Folder(path, settings.migrate.files or str(path))
    found = {"prisma": _prisma_files, "flyway": _flyway_files,
             "none": _plain_files}[settings.migrate.tool](folder)
    pending = None if state is None or state.pending is None else set(state.pending)
    return [Migration(name, file, pending is None or name in pending) for name, file in found]


def _prisma_files(folder: migrations.Folder) -> list[tuple[str, Path]]:
    return [(name, folder.path / name / "migration.sql")
            for name in migrations.prisma_migrations(folder)]


def _plain_files(folder: migrations.Folder) -> list[tuple[str, Path]]:
    """``tool = "none"``: every ``.sql`` file, in name order; with no tool's table to ask,
    all of them count as pending."""
    return [(path.relative_to(folder.path).as_posix(), path)
            for path in migrations.sql_files(folder.path)]


def _flyway_files(folder: migrations.Folder) -> list[tuple[str, Path]]:
    """Versioned scripts by version, then repeatable ones, as Flyway runs them (the names
    are file names, found anywhere under the folder)."""
    versioned, repeatable = migrations.flyway_scripts(folder)
    where = {p.name: p for p in sorted(folder.path.rglob("*.sql"))}
    names = [*versioned.values(), *(name for name, _ in repeatable.values())]
    return [(name, where[name]) for name in names]


def examine(settings: Settings, state: migrations.ToolState | None) -> list[Finding]:
    """Every finding, graded and sorted, paths relative to the config's folder."""
    for name in settings.lint.warnings:
        if name not in RULES or name in settings.lint.errors:
            raise ConfigError(f"[lint] warnings: {name!r} is not one of the clinic's rules"
                              f" ({', '.join(_OWN_RULES)}) or is also in [lint] errors.")
    folder = migrations.files(settings)
    if folder is None or settings.migrate.tool not in SQL_TOOLS:
        return []
    found = history(settings, state)
    is_prisma = settings.migrate.tool == "prisma"
    findings: list[Finding] = []
    statements: list[sql.Statement] = []
    for migration in found:
        parsed, problems = _examine_file(migration, settings.migrate.tool)
        statements += parsed
        findings += problems
    in_order, creators = sql.order(statements)
    findings += in_order
    if is_prisma:
        findings += _loose_files(folder, creators)
    findings += cluster_level.changes([s for s in statements if s.migration.pending])
    if settings.lint.idempotency:
        findings += sql.idempotency([s for s in statements if s.migration.pending])
    if is_prisma:
        findings += prisma.checksum_changed(found, state.checksums if state else {})
        findings += prisma.timestamps(found)
    if settings.lint.squawk:
        findings += squawk.run([m.path for m in found if m.pending],
                                      settings.lint.squawk_exclude, cwd=settings.config_dir,
                                      folder=folder)
    moot = sql.on_new_tables(statements)
    return _finished(settings, found, findings, moot)


def _examine_file(migration: Migration, tool: str
                  ) -> tuple[list[sql.Statement], list[Finding]]:
    """The file's statements for the replay, and what is wrong with it if it is pending
    (an applied file already ran; only the replay and its checksum still concern it).
    Prisma's pasted CLI output is found and left out of the parse; so are psql's own
    commands (``\\set ON_ERROR_STOP on``) in plain SQL files, which psql runs."""
    text, unreadable = _read(migration)
    if text is None:
        return [], [unreadable] if unreadable and migration.pending else []
    pasted = prisma.cli_output_lines(text) if tool == "prisma" else []
    skipped = sql.psql_commands(text) if tool == "none" else []
    statements, syntax = sql.parse(migration, sql.blank_lines(text, [*pasted, *skipped]),
                                   placeholders=tool == "flyway")  # Flyway's ${name}
    if not migration.pending:
        return statements, []
    return statements, [*prisma.cli_output(migration, pasted, text), *filter(None, [syntax])]


def _loose_files(folder: Path, creators: dict[tuple[str, str], sql.Statement]
                 ) -> list[Finding]:
    """Prisma's loose SQL files, each said with what it holds (its pasted lines found too),
    and what it would re-create should it be given a migration folder of its own: the
    first users' incident began with exactly that step."""
    findings = []
    for loose in prisma.loose_sql(folder):
        migration = Migration(loose.file.name, loose.file, pending=True)
        parsed, problems = _examine_file(migration, "prisma")
        findings += problems
        shown = ", ".join(sql.described(s) for s in parsed[:3])
        more = f" and {len(parsed) - 3} more" if len(parsed) > 3 else ""
        again = [f"{sql.described(s)} (already created by {creators[made].migration.name})"
                 for s in parsed if (made := sql.creates(s)) in creators]
        holds = f". It holds {len(parsed)} statement(s): {shown}{more}" if parsed else ""
        advice = _advice(parsed, again, problems) if loose.rule == "prisma-loose-sql" else ""
        findings.append(replace(loose, message=f"{loose.message}{holds}{advice}"))
    return findings


def _advice(parsed: list[sql.Statement], again: list[str], problems: list[Finding]) -> str:
    """What to do with a loose file: never give it a folder as it is where it would fail
    (the step that began the first users' incident)."""
    pasted = sum(1 for problem in problems if problem.rule == "prisma-cli-output")
    fails = [*again, *([f"{pasted} line(s) that are not SQL (listed)"] if pasted else []),
             *(["a syntax error (listed)"] if len(problems) > pasted else [])]
    if fails:
        return (f". Do not give it a migration folder as it is: it would fail the first time"
                f" it runs ({'; '.join(fails)}); move only what production still needs into a"
                " new migration folder, or delete the file")
    return (". To run it, give it a migration folder of its own, named after the last"
            " migration's timestamp") if parsed else ""


def _read(migration: Migration) -> tuple[str | None, Finding | None]:
    try:
        data = migration.path.read_bytes()
    except OSError as exc:
        return None, Finding(migration.path, 1, "sql-syntax",
                             f"cannot be read ({exc.strerror or exc})")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return None, Finding(migration.path, line, "sql-syntax", "is not UTF-8 text")


def _finished(settings: Settings, found: Sequence[Migration], findings: list[Finding],
              moot: set[tuple[Path, int]]) -> list[Finding]:
    """Promote what ``[lint] errors`` names, drop squawk's echo of our own idempotency
    warning, mark what cannot matter, make paths relative and sort in the order the tool
    runs the files."""
    ours = {(f.file, f.line) for f in findings if f.rule == "missing-if-not-exists"}
    errors, warnings = set(settings.lint.errors), set(settings.lint.warnings)
    rank = {m.path: index for index, m in enumerate(found)}
    is_prisma = settings.migrate.tool == "prisma"
    kept = [_graded(_judged(f, moot, is_prisma=is_prisma), errors, warnings) for f in findings
            if not (f.rule == "squawk:prefer-robust-stmts" and (f.file, f.line) in ours)]
    kept.sort(key=lambda f: (rank.get(f.file, len(rank)), str(f.file), f.line, f.rule))
    base = settings.config_dir
    return [replace(f, file=Path(os.path.relpath(f.file, base))) for f in kept]


_RERUN_RULES = ("missing-if-not-exists", "squawk:prefer-robust-stmts")
# squawk's advice for a table that others use or that holds rows: a table the same file
# creates has neither.
_NEW_TABLE_RULES = ("squawk:require-concurrent-index-creation",
                    "squawk:adding-foreign-key-constraint", "squawk:constraint-missing-not-valid",
                    "squawk:disallowed-unique-constraint", "squawk:adding-not-nullable-field",
                    "squawk:adding-required-field", "squawk:changing-column-type")
# The window sets both in the options of the URL Prisma's migrate command is handed, which
# its engine reads: the advice to set them in the file is followed already. (Another tool may
# read its own settings, JDBC's URL say, where the window sets nothing.)
_WINDOW_BOUNDS = ("squawk:require-lock-timeout", "squawk:require-statement-timeout")


def _judged(finding: Finding, moot: set[tuple[Path, int]], *, is_prisma: bool) -> Finding:
    """The finding marked moot where it cannot matter (a Prisma migration runs once, with
    the timeouts the window puts in its URL)."""
    if (finding.rule in _NEW_TABLE_RULES and (finding.file, finding.line) in moot) \
            or (is_prisma and finding.rule in (*_RERUN_RULES, *_WINDOW_BOUNDS)):
        return replace(finding, moot=True)
    return finding


def _graded(finding: Finding, errors: set[str], warnings: set[str]) -> Finding:
    named = {finding.rule, finding.rule.removeprefix("squawk:")}
    if named & warnings:
        return replace(finding, severity="warning")
    return replace(finding, severity="error") if named & errors else finding


def shown(findings: Sequence[Finding], *, everything: bool = False) -> list[Finding]:
    """What is printed: all but the moot ones, unless asked for everything."""
    return [f for f in findings if everything or not f.moot]


def summary(findings: Sequence[Finding], *, everything: bool = False) -> str:
    """The counts a run of the clinic ends with."""
    listed = shown(findings, everything=everything)
    hidden = len(findings) - len(listed)
    errors = sum(1 for f in listed if f.severity == "error")
    said = "no errors, no warnings" if not listed else (
        f"{_count(errors, 'error')}, {_count(len(listed) - errors, 'warning')}"
        f" in {_count(len({f.file for f in listed}), 'file')}")
    return said + (f" ({hidden} that cannot matter not shown: `window lint --all`)"
                   if hidden else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def gate(settings: Settings, state: migrations.ToolState | None, out: TextIO | None = None
         ) -> list[Finding]:
    """The clinic before the window: every finding is printed; any error refuses (exit 3)
    with nothing done; the warnings are handed back for the journal."""
    if not settings.lint.enabled:
        return []
    findings = shown(examine(settings, state))
    for finding in findings:
        print(finding, file=out or sys.stdout)
    errors = sum(1 for f in findings if f.severity == "error")
    structlog.get_logger().info("migrations_linted", errors=errors,
                                warnings=len(findings) - errors)
    if errors:
        raise GateRefused(f"the migration clinic found {summary(findings)} (listed above;"
                          " `window lint` shows them again); nothing was done. A rule meant"
                          " to be broken is demoted by [lint] warnings = [\"<rule>\"].")
    return findings


def lint(settings: Settings, out: TextIO | None = None, err: TextIO | None = None, *,
         everything: bool = False) -> int:
    """``window lint``: the clinic alone; 3 when it finds an error, as a refused window.
    With ``everything``, the findings that cannot matter are shown too."""
    out = out or sys.stdout
    err = err or sys.stderr
    state, note = _tool_state(settings)
    scope = _scope_notes(settings)
    for line in [*scope, *filter(None, [note])]:
        print(line, file=err)
    if any(line.startswith("nothing to lint") for line in scope):
        return ExitCode.COMPLETED  # no verdict on files that were never read
    found = history(settings, state)
    if found:
        pending = sum(1 for m in found if m.pending)
        print(f"linting {pending} pending of {len(found)} migration(s) in"
              f" {settings.migrate.files}", file=err)
    findings = examine(settings, state)
    for finding in shown(findings, everything=everything):
        print(finding, file=out)
    print(summary(findings, everything=everything), file=out)
    return ExitCode.REFUSED if any(f.severity == "error" for f in findings) \
        else ExitCode.COMPLETED


def _scope_notes(settings: Settings) -> list[str]:
    tool = settings.migrate.tool
    notes = []
    if settings.migrate.files is None:
        notes.append("nothing to lint: [migrate] files names the migration files.")
    elif tool not in SQL_TOOLS:
        notes.append(f"nothing to lint: {tool} migrations are Python; the clinic reads SQL.")
    if not settings.lint.enabled:
        notes.append("[lint] enabled = false: `window run` skips the clinic.")
    return notes


def _tool_state(settings: Settings) -> tuple[migrations.ToolState | None, str | None]:
    """What the tool's table on production says, when it can be asked; else a note."""
    if settings.migrate.tool not in SQL_TOOLS or settings.migrate.tool == "none" \
            or settings.migrate.files is None:
        return None, None
    variable = settings.target.url_env
    if not os.environ.get(variable, "").strip():
        return None, f"{variable} is not set: every migration file is linted as pending."
    folder = migrations.files(settings)
    try:
        target = gates.database(settings, variable, "target")
        with pg.connect(target, time.time() + settings.target.connect_timeout) as conn:
            state = migrations.read(conn, settings.migrate, folder, target.schema)
    except (GateRefused, PhaseFailed) as exc:
        reason = exc.message
    except psycopg.Error as exc:
        reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    else:
        return state, None
    return None, (f"cannot read the migration tool's table ({reason}): every migration"
                  " file is linted as pending.")
