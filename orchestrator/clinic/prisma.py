"""The migration clinic's Prisma rules: what Prisma's layout and its own table demand.

Prisma runs ``<name>/migration.sql`` in folder-name order and nothing else (the timestamp
prefix ``migrate dev`` writes is a convention: the documented baseline is ``0_init``), refuses
to go on after a migration whose SQL failed (P3009, until resolved by hand) and records a
sha256 per applied file. The first users lost a deploy to each: a fix in a loose ``.sql`` file
that never ran, CLI warnings pasted into ``migration.sql``, an applied migration edited
afterwards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pglast.parser import ParseError, Token, scan

from orchestrator.clinic.findings import Finding, Migration
from orchestrator.clinic.sql import physical_lines, stopped_at

# What the Prisma CLI (and npm around it) prints, as it lands in a file through `>`.
CLI_OUTPUT = re.compile(
    r"(warn|prisma:warn|prisma:info|npm warn|npm WARN|Prisma schema loaded"
    r"|Environment variables loaded|Datasource|Loaded Prisma config|Applying migration"
    r"|The following migration|All migrations have been|Error: P\d{4})\b")
_SEMICOLON = "ASCII_59"
_COMMENTS = ("SQL_COMMENT", "C_COMMENT")


def loose_sql(folder: Path) -> list[Finding]:
    """SQL files Prisma never runs. One outside any migration folder (a folder with a
    ``migration.sql``) is an error: it looks like a migration, and a fix put there never
    reaches the database. One beside a ``migration.sql`` (a ``down.sql``, a backfill kept
    for reference) is a warning: likely on purpose, but Prisma never runs it either. Every
    such file is reported whatever the tool's table says: none of them ever ran."""
    findings = []
    for path in sorted(folder.rglob("*.sql")):
        parts = path.relative_to(folder).parts
        if len(parts) == 2 and parts[1] == "migration.sql":
            continue  # a migration, whatever its folder's name
        if len(parts) > 1 and (folder / parts[0] / "migration.sql").is_file():
            findings.append(Finding(
                path, 1, "prisma-unused-sql",
                f"Prisma never runs this file: it runs only {parts[0]}/migration.sql from"
                " this migration folder", "warning"))
        else:
            findings.append(Finding(
                path, 1, "prisma-loose-sql",
                "Prisma never runs this file: only <folder>/migration.sql is a migration"))
    return findings


def timestamps(history: Sequence[Migration]) -> list[Finding]:
    """Folder names whose timestamps do not order them: two sharing one, or one that sorts
    by name before another yet carries a later time (``20251122_x`` against
    ``20251122000000_y``: the shorter stamp reads as midnight, the name sorts after).
    Prisma runs them in name order; the author likely meant another one. Warnings: the
    order may be right by chance."""
    stamped = [(m, match.group(1).ljust(STAMP_DIGITS, "0")[:STAMP_DIGITS])
               for m in history if (match := _STAMP.match(m.name))]
    findings = []
    for i, (later, stamp) in enumerate(stamped):
        for earlier, other in stamped[:i]:
            if other == stamp:
                said = f"shares its timestamp with {earlier.name}"
            elif other > stamp:
                said = f"is earlier by its timestamp than {earlier.name}"
            else:
                continue
            findings.append(Finding(later.path, 1, "migration-order",
                                    f"{later.name} {said}: Prisma runs them in name order"
                                    f" ({earlier.name} first)", "warning"))
            break
    return findings


STAMP_DIGITS = 14  # migrate dev's YYYYMMDDHHMMSS
_STAMP = re.compile(r"(\d{8,})_")


def cli_output_lines(text: str) -> list[int]:
    """Lines (1-based) that are Prisma CLI output, not SQL, all of them in one pass: those
    that read as the CLI's own words, then, while PostgreSQL's parser stops at a line that
    starts where a statement may start but with a word no statement starts with (a notice's
    second line, an update box), that line too. Only lines that start at their first column,
    never inside a string, a dollar-quoted body or a comment."""
    found: list[int] = []
    tokens = _tokens(text)
    offset = 0
    for number, line in enumerate(physical_lines(text), start=1):
        if CLI_OUTPUT.match(line) and _statement_may_start(tokens, offset, found, text):
            found.append(number)
        offset += len(line)
    return stopped_at(text, found, _not_sql)


def _not_sql(line: str, offset: int, blanked: str, found: list[int]) -> bool:
    """A line the parser stopped at that is pasted output: it starts at its first column,
    where a statement may start, with a word no statement starts with."""
    first = line.split(maxsplit=1)[0].lower() if line.strip() else ""
    return bool(line[:1].strip()) and first not in STATEMENT_STARTS \
        and _statement_may_start(_tokens(blanked), offset, found, blanked)


# The words a PostgreSQL statement starts with: a line starting with any other word, where a
# statement would start, is not SQL.
STATEMENT_STARTS = frozenset(["abort", "alter", "analyse", "analyze", "begin", "call",
    "checkpoint", "close", "cluster", "comment", "commit", "copy", "create", "deallocate",
    "declare", "delete", "discard", "do", "drop", "end", "execute", "explain", "fetch", "grant",
    "import", "insert", "listen", "load", "lock", "merge", "move", "notify", "prepare",
    "reassign", "refresh", "reindex", "release", "reset", "revoke", "rollback", "savepoint",
    "security", "select", "set", "show", "start", "table", "truncate", "unlisten", "update",
    "vacuum", "values", "with", "(", "--"])


def cli_output(migration: Migration, lines: Iterable[int], text: str) -> list[Finding]:
    """A finding per pasted line: the CLI's own words said so, any other line as not SQL."""
    everything = physical_lines(text)
    found = []
    for number in lines:
        line = everything[number - 1].strip()
        said = "Prisma CLI output pasted into the SQL" if CLI_OUTPUT.match(line) else (
            f"not SQL (no statement starts with {line.split()[0][:20]!r}): pasted output?")
        found.append(Finding(migration.path, number, "prisma-cli-output",
                             f"{said}: the migration fails on it half-way and Prisma then"
                             " refuses every later deploy (P3009); delete the line"))
    return found


def checksum_changed(history: Iterable[Migration], checksums: Mapping[str, str]
                     ) -> list[Finding]:
    """Applied migrations whose file no longer hashes to what ``_prisma_migrations``
    recorded: the history production went through is not the one in the repository."""
    findings = []
    for migration in history:
        recorded = checksums.get(migration.name)
        if migration.pending or not recorded:
            continue
        try:
            script = migration.path.read_bytes()
        except OSError:
            continue
        if not matches(script, recorded):
            findings.append(Finding(
                migration.path, 1, "prisma-checksum-changed",
                f"{migration.name} changed after it was applied (sha256"
                f" {hashlib.sha256(script).hexdigest()[:12]}, _prisma_migrations.checksum"
                f" {recorded[:12]}): restore the applied file and put the change in a new"
                " migration"))
    return findings


def matches(script: bytes, checksum: str) -> bool:
    """As Prisma's schema engine compares: line endings either way, and the unpadded hex
    an old engine wrote (prisma-engines issue 1887)."""
    for variant in (script, script.replace(b"\r\n", b"\n"), script.replace(b"\n", b"\r\n")):
        digest = hashlib.sha256(variant).digest()
        padded = digest.hex()
        if checksum in (padded, "".join(f"{byte:x}" for byte in digest)):
            return True
    return False


def _tokens(text: str) -> list[Token] | None:
    try:
        return scan(text)
    except ParseError:  # an unterminated quote: judge lines by their start alone
        return None


def _statement_may_start(tokens: list[Token] | None, offset: int, flagged: list[int],
                         text: str) -> bool:
    if tokens is None:
        return True
    before = None
    for token in tokens:
        if token.start < offset <= token.end:
            return False  # inside a string, a dollar-quoted body or a comment
        if token.end < offset and token.name not in _COMMENTS:
            before = token
    if before is None or before.name == _SEMICOLON:
        return True
    return text.count("\n", 0, before.start) + 1 in flagged
