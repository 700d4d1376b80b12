"""The migration clinic's SQL rules, read with PostgreSQL's own parser (pglast).

A table altered before the migration that creates it, or a foreign key to a parent table
that comes later, only shows across files: the history is replayed statement by statement,
in the tool's order, keeping which tables exist and which columns they have. Names compare
as PostgreSQL compares them: pglast hands unquoted identifiers already folded to lower case
and quoted ones as written, so ``"Order"`` and ``orders`` stay two tables. A table that no
migration creates predates the history (created by hand, or before the tool came): it is
never reported, because nothing in the files says it is missing.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ObjectType
from pglast.parser import ParseError

from orchestrator.clinic.findings import Finding, Migration

RELATION_KINDS = (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW,
                  ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_FOREIGN_TABLE)
# Where a relation name defines the relation rather than uses it.
_DEFINING = ((ast.CreateStmt, "relation"), (ast.IntoClause, "rel"), (ast.ViewStmt, "view"),
             (ast.CreateSeqStmt, "sequence"))
# ALTER TABLE IF EXISTS: the author said the table may not be there.
_TOLERANT = ((ast.AlterTableStmt, "relation"), (ast.RenameStmt, "relation"))
_KINDS = {ast.AlterTableStmt: "ALTER TABLE", ast.RenameStmt: "ALTER TABLE ... RENAME",
          ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE",
          ast.IndexStmt: "CREATE INDEX", ast.CreateStmt: "CREATE TABLE", ast.SelectStmt: "SELECT",
          ast.CreateTableAsStmt: "CREATE TABLE AS", ast.ViewStmt: "CREATE VIEW",
          ast.TruncateStmt: "TRUNCATE", ast.CommentStmt: "COMMENT", ast.GrantStmt: "GRANT"}
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
# Flyway's placeholders (``${schema}``, ``${flyway:defaultSchema}``): Flyway puts their values
# in before the script runs, so PostgreSQL never sees them.
_FLYWAY_PLACEHOLDER = re.compile(r"\$\{([^{}\n]+)\}")


class Lines:
    """Character offsets (pglast's, already in characters) to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def at(self, offset: int | None) -> int:
        return bisect.bisect_right(self._starts, offset or 0)


@dataclass(frozen=True)
class Statement:
    migration: Migration
    line: int
    node: ast.Node
    lines: Lines = field(repr=False, compare=False)
    last_line: int = 0  # where its text ends (with the comments before it, its first line)

    def line_of(self, node: ast.Node) -> int:
        """The line of a part of the statement (a table name, a column), where pglast
        knows it; else the statement's own line."""
        location = getattr(node, "location", None)
        return self.lines.at(location) if isinstance(location, int) and location >= 0 \
            else self.line


def blank_lines(text: str, numbers: Iterable[int]) -> str:
    """The text with those lines emptied, every other offset and line number unchanged, so
    that the parser reads the SQL around pasted output."""
    wanted = set(numbers)
    return "".join(" " * len(line.rstrip("\r\n")) + line[len(line.rstrip("\r\n")):]
                   if number in wanted else line
                   for number, line in enumerate(physical_lines(text), start=1))


def physical_lines(text: str) -> list[str]:
    """Lines as PostgreSQL counts them (``\\n`` alone ends one), each with its ending."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


_PSQL_COMMAND = re.compile(r"[ \t]*\\")
MAX_BLANKED_LINES = 1000


def psql_commands(text: str) -> list[int]:
    """The lines (1-based) of psql's own commands (``\\set``, ``\\echo``, ``\\i``): psql
    runs them, PostgreSQL never sees them. Only a line the parser stops at counts: one
    starting with a backslash inside a string or a function's body is SQL."""
    return stopped_at(text, [], lambda line, *_: bool(_PSQL_COMMAND.match(line)))


def stopped_at(text: str, found: Sequence[int],
               wanted: Callable[[str, int, str, list[int]], bool]) -> list[int]:
    """``found``, then, while PostgreSQL's parser stops at a line that ``wanted`` takes
    (given the line, its offset, the text with the lines found so far blanked, and those
    lines), that line too: the lines to leave out for the parser to read the rest."""
    starts = list(itertools.accumulate((len(line) for line in physical_lines(text)),
                                       initial=0))
    lines = sorted(found)
    for _ in range(MAX_BLANKED_LINES):
        blanked = blank_lines(text, lines)
        try:
            parse_sql(blanked)
        except ParseError as exc:
            at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else -1
            number = bisect.bisect_right(starts, at)
            if at < 0 or not 0 < number < len(starts) or number in lines or not wanted(
                    text[starts[number - 1]:starts[number]], starts[number - 1], blanked,
                    lines):
                break
            lines = sorted({*lines, number})
            continue
        break
    return lines


def parse(migration: Migration, text: str, *, placeholders: bool = False
          ) -> tuple[list[Statement], Finding | None]:
    """The file's statements, or a ``sql-syntax`` finding at the parser's line.

    With ``placeholders`` (Flyway, which puts their values in before the script runs), each
    ``${name}`` is read as the identifier ``placeholder_name``, or as the number ``1`` where
    the parser wants a number there (``VARCHAR(${length})``); no line changes, so a real
    syntax error keeps its line."""
    pieces = _FLYWAY_PLACEHOLDER.split(text) if placeholders else [text]
    numbers: set[int] = set()  # the placeholders (by index in pieces) read as numbers
    while True:
        sql, spans = _substituted(pieces, numbers)
        lines = Lines(sql)
        try:
            raws = parse_sql(sql)
        except ParseError as exc:
            at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
            retry = next((index for index, (start, end) in spans.items()
                          if start <= at < end and index not in numbers), None)
            if retry is not None:
                numbers.add(retry)
                continue
            return [], Finding(migration.path, lines.at(at), "sql-syntax",
                               f"PostgreSQL cannot parse this: {exc.args[0]}")
        return [Statement(migration, lines.at(raw.stmt_location), raw.stmt, lines,
                          lines.at((raw.stmt_location or 0) + raw.stmt_len) if raw.stmt_len
                          else lines.at(len(sql)))
                for raw in raws if raw.stmt is not None], None


def _substituted(pieces: Sequence[str], numbers: set[int]
                 ) -> tuple[str, dict[int, tuple[int, int]]]:
    """The text with its placeholders (the odd pieces, as ``re.split`` leaves them) put
    back as names or numbers, and where each one now stands."""
    parts: list[str] = []
    spans: dict[int, tuple[int, int]] = {}
    offset = 0
    for index, piece in enumerate(pieces):
        part = piece
        if index % 2:
            part = "1" if index in numbers \
                else "placeholder_" + re.sub(r"[^a-z0-9_]", "_", piece.lower())
            spans[index] = (offset, offset + len(part))
        parts.append(part)
        offset += len(part)
    return "".join(parts), spans


def idempotency(statements: Sequence[Statement]) -> list[Finding]:
    """CREATE TABLE / CREATE INDEX / ADD COLUMN without IF NOT EXISTS: a migration that
    failed half-way cannot simply be run again (the runbook's "failed on re-run")."""
    return [Finding(s.migration.path, line, "missing-if-not-exists",
                    f"{what} without IF NOT EXISTS fails when the migration is run again",
                    "warning")
            for s in statements for line, what in _unguarded(s)]


def _unguarded(statement: Statement) -> Iterator[tuple[int, str]]:
    node = statement.node
    if isinstance(node, ast.CreateStmt) and not node.if_not_exists and node.relation:
        yield statement.line, f"CREATE TABLE {display(key(node.relation))}"
    elif isinstance(node, ast.IndexStmt) and not node.if_not_exists:
        yield statement.line, f"CREATE INDEX {display(node.idxname or '')}".rstrip()
    elif isinstance(node, ast.AlterTableStmt) and node.relation:
        for cmd, column in _added_columns(node):
            if not cmd.missing_ok:
                yield statement.line_of(column), (f"ADD COLUMN {display(column.colname or '')}"
                                                  f" to {display(key(node.relation))}")


# Statements that put rows into the table they name.
_FILLING = (ast.InsertStmt, ast.CopyStmt, ast.UpdateStmt, ast.MergeStmt)


def on_new_tables(statements: Sequence[Statement]) -> set[tuple[Path, int]]:
    """The lines of each CREATE INDEX or ALTER TABLE on a table that an earlier statement of
    the same file creates and nothing has filled yet: nobody can be using that table and it
    holds no rows, so building its index without CONCURRENTLY, or validating its new foreign
    key at once, blocks nobody and scans nothing. ``CREATE TABLE IF NOT EXISTS`` may find the
    table there already, with rows: it does not count."""
    lines: set[tuple[Path, int]] = set()
    empty: set[tuple[Path, str]] = set()
    for statement in statements:
        node, path = statement.node, statement.migration.path
        if isinstance(node, ast.CreateStmt) and node.relation and not node.if_not_exists:
            empty.add((path, key(node.relation)))
        elif isinstance(node, _FILLING) and node.relation:
            empty.discard((path, key(node.relation)))
        elif isinstance(node, ast.IndexStmt | ast.AlterTableStmt) and node.relation \
                and (path, key(node.relation)) in empty:
            lines.update((path, n) for n in range(statement.line, statement.last_line + 1))
    return lines


def order(history: Sequence[Statement]) -> tuple[list[Finding], dict[tuple[str, str], Statement]]:
    """Replay every migration in order; report what only a later statement makes possible,
    or creates what is there already, when the window is to run either end of it (an
    applied history already went through). Also: what created each table, index and type
    the history leaves, by ``(kind, name)``."""
    replay = _Replay(history)
    return replay.run(), replay.creators


def creates(statement: Statement) -> tuple[str, str] | None:
    """The table, index or type a statement creates without IF NOT EXISTS, as ``order``
    names it."""
    node = statement.node
    if getattr(node, "if_not_exists", False):
        return None
    if isinstance(node, ast.CreateStmt) and node.relation:
        return "table", key(node.relation)
    return _created_object(node)


def described(statement: Statement) -> str:
    """``CREATE TABLE "Order"``: the statement's kind and what it is about, where known."""
    node = statement.node
    relation = getattr(node, "relation", None)
    about = _created_object(node) or (
        ("", key(relation)) if isinstance(relation, ast.RangeVar) else None)
    return f"{kind(node)} {display(about[1])}" if about else kind(node)


class _Replay:
    def __init__(self, history: Sequence[Statement]) -> None:
        self.history = history
        self.created: dict[str, list[int]] = {}
        for position, statement in enumerate(history):
            for _, _, rangevar in _relations(statement.node, defining=True):
                self.created.setdefault(key(rangevar), []).append(position)
        self.tables: set[str] = set()
        self.columns: dict[str, dict[str, tuple[Statement, ast.ColumnDef]]] = {}
        # What created each table, index and type that exists at this point of the replay.
        self.creators: dict[tuple[str, str], Statement] = {}
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        for position, statement in enumerate(self.history):
            self._check_uses(position, statement)
            self._apply(statement)
        return self.findings

    def _report(self, at: Statement, node: ast.Node, other: Statement, rule: str,
                message: str) -> None:
        if at.migration.pending or other.migration.pending:
            self.findings.append(Finding(at.migration.path, at.line_of(node), rule, message))

    def _check_uses(self, position: int, statement: Statement) -> None:
        seen: set[tuple[str, bool]] = set()
        for parent, member, rangevar in _relations(statement.node, defining=False):
            name, foreign = key(rangevar), member == "pktable"
            if name in self.tables or (name, foreign) in seen:
                continue
            later = next((p for p in self.created.get(name, ()) if p > position), None)
            if later is None or _tolerated(parent, member):
                continue
            seen.add((name, foreign))
            creator = self.history[later]
            where = _where(creator, statement)
            if foreign:
                self._report(statement, rangevar, creator, "foreign-key-to-later-table",
                             f"a foreign key references {display(name)} before {where}"
                             " creates it: parent tables must come before the tables that"
                             " reference them")
            else:
                self._report(statement, rangevar, creator, "table-used-before-created",
                             f"{kind(statement.node)} uses {display(name)} before {where}"
                             " creates it")

    def _apply(self, statement: Statement) -> None:
        node = statement.node
        if isinstance(node, ast.CreateStmt) and node.relation:
            self._create(key(node.relation), statement, node)
        elif isinstance(node, ast.AlterTableStmt) and node.relation:
            self._alter(key(node.relation), statement, node)
        elif isinstance(node, ast.RenameStmt) and node.newname:
            self._rename(node)
        elif isinstance(node, ast.DropStmt):
            for name in _dropped(node):
                self._drop(name, _KIND_OF.get(node.removeType, "") if node.removeType else "")
        elif created := _created_object(node):
            self._created(created, statement, guarded=bool(getattr(node, "if_not_exists", 0)))
        else:
            for _, _, rangevar in _relations(node, defining=True):
                self.tables.add(key(rangevar))

    def _create(self, name: str, statement: Statement, node: ast.CreateStmt) -> None:
        self._created(("table", name), statement, guarded=bool(node.if_not_exists))
        if name in self.tables:
            return  # CREATE TABLE IF NOT EXISTS of a table there already: nothing changes
        self.tables.add(name)
        self.columns[name] = {c.colname: (statement, c) for c in node.tableElts or ()
                              if isinstance(c, ast.ColumnDef) and c.colname}

    def _created(self, made: tuple[str, str], statement: Statement, *, guarded: bool) -> None:
        """An object created where the replay already has one of that name: without IF NOT
        EXISTS the statement fails the first time it runs (the first users' P3018)."""
        earlier = self.creators.get(made)
        if earlier is None:
            self.creators[made] = statement
        elif not guarded:
            kind_, name = made
            self._report(statement, statement.node, earlier, "created-twice",
                         f"CREATE {kind_.upper()} {display(name)} fails the first time it runs:"
                         f" {_where(earlier, statement)} already creates it (drop this"
                         " statement, or add IF NOT EXISTS)")

    def _alter(self, name: str, statement: Statement, node: ast.AlterTableStmt) -> None:
        """The statement's commands in order, as PostgreSQL runs them: Prisma changes a
        column's type with ``DROP COLUMN "a", ADD COLUMN "a" ...`` in one statement."""
        columns = self.columns.setdefault(name, {})
        for cmd in node.cmds or ():
            if cmd.subtype == AlterTableType.AT_DropColumn:
                columns.pop(cmd.name or "", None)
            elif cmd.subtype == AlterTableType.AT_AddColumn \
                    and isinstance(cmd.def_, ast.ColumnDef):
                self._add_column(name, statement, cmd, cmd.def_, columns)

    def _add_column(self, name: str, statement: Statement, cmd: ast.AlterTableCmd,
                    column: ast.ColumnDef,
                    columns: dict[str, tuple[Statement, ast.ColumnDef]]) -> None:
        earlier = columns.get(column.colname or "")
        if earlier and not cmd.missing_ok:
            self._report(statement, column, earlier[0], "column-added-twice",
                         f"{display(name)}.{display(column.colname or '')} is added"
                         f" again; {_where(earlier[0], statement, earlier[1])} already"
                         " defines it (don't pre-add columns that later migrations add)")
        columns.setdefault(column.colname or "", (statement, column))

    def _rename(self, node: ast.RenameStmt) -> None:
        what, new = node.renameType, node.newname or ""
        if node.relation is None:
            if what == ObjectType.OBJECT_TYPE and isinstance(node.object, tuple):
                name = _qualified(node.object)
                self._move(("type", name), ("type", _beside(name, new)))
            return
        name = key(node.relation)
        if what == ObjectType.OBJECT_COLUMN:
            columns = self.columns.get(name, {})
            if node.subname in columns:
                columns[new] = columns.pop(node.subname or "")
        elif what == ObjectType.OBJECT_INDEX:
            self._move(("index", name), ("index", _beside(name, new)))
        elif what in RELATION_KINDS:
            renamed = _beside(name, new)
            self._move(("table", name), ("table", renamed))
            if name in self.tables:
                self.tables.discard(name)
                self.tables.add(renamed)
            if name in self.columns:
                self.columns[renamed] = self.columns.pop(name)

    def _move(self, old: tuple[str, str], new: tuple[str, str]) -> None:
        if old in self.creators:
            self.creators[new] = self.creators.pop(old)

    def _drop(self, name: str, kind_: str) -> None:
        name = name.removeprefix("public.")
        self.creators.pop((kind_, name), None)
        if kind_ == "table":
            self.tables.discard(name)
            self.columns.pop(name, None)


_KIND_OF = {**dict.fromkeys(RELATION_KINDS, "table"), ObjectType.OBJECT_INDEX: "index",
            ObjectType.OBJECT_TYPE: "type"}


def _created_object(node: ast.Node) -> tuple[str, str] | None:
    """The index or type a statement creates, as the replay names it."""
    if isinstance(node, ast.IndexStmt) and node.idxname and node.relation:
        schema = node.relation.schemaname
        return "index", node.idxname if schema in (None, "public") else f"{schema}.{node.idxname}"
    if isinstance(node, ast.CreateEnumStmt) and node.typeName:
        return "type", _qualified(node.typeName)
    if isinstance(node, ast.CompositeTypeStmt) and node.typevar:
        return "type", key(node.typevar)
    return None


def _dropped(node: ast.DropStmt) -> Iterator[str]:
    for names in node.objects or ():
        parts = names.names if isinstance(names, ast.TypeName) else names
        yield _qualified(parts if isinstance(parts, tuple) else ())


def _qualified(parts: tuple[Any, ...]) -> str:
    name = ".".join(n.sval or "" for n in parts if isinstance(n, ast.String))
    return name.removeprefix("public.")


def _beside(name: str, new: str) -> str:
    """``new`` in the schema of ``name``."""
    return f"{name.rpartition('.')[0]}.{new}".lstrip(".")


def _added_columns(node: ast.AlterTableStmt) -> Iterator[tuple[ast.AlterTableCmd, ast.ColumnDef]]:
    """The statement's ADD COLUMNs, but for those that put back a column it drops first
    (Prisma's change of a column's type): run again, the DROP makes way for the ADD."""
    dropped: set[str] = set()
    for cmd in node.cmds or ():
        if cmd.subtype == AlterTableType.AT_DropColumn:
            dropped.add(cmd.name or "")
        elif cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef) \
                and cmd.def_.colname not in dropped:
            yield cmd, cmd.def_


def _relations(node: ast.Node, *, defining: bool
               ) -> Iterator[tuple[ast.Node | None, str, ast.RangeVar]]:
    """Every relation name in a statement that defines (or else uses) a relation, with the
    node holding it; names of the statement's own WITH queries are not relations."""
    ctes = {n.ctename for _, _, n in _walk(node) if isinstance(n, ast.CommonTableExpr)}
    for parent, member, found in _walk(node):
        if not isinstance(found, ast.RangeVar) or not found.relname:
            continue
        if found.schemaname is None and found.relname in ctes:
            continue
        if any(isinstance(parent, t) and member == m for t, m in _DEFINING) == defining:
            yield parent, member, found


def _walk(node: object, parent: ast.Node | None = None, member: str = ""
          ) -> Iterator[tuple[ast.Node | None, str, ast.Node]]:
    if isinstance(node, tuple):
        for item in node:
            yield from _walk(item, parent, member)
    elif isinstance(node, ast.Node):
        yield parent, member, node
        for name in node:
            yield from _walk(getattr(node, name), node, name)


def _tolerated(parent: ast.Node | None, member: str) -> bool:
    return any(isinstance(parent, t) and member == m for t, m in _TOLERANT) \
        and bool(getattr(parent, "missing_ok", False))


def _where(other: Statement, here: Statement, node: ast.Node | None = None) -> str:
    line = other.line_of(node) if node is not None else other.line
    if other.migration == here.migration:
        return f"line {line} of this migration"
    return f"{other.migration.name} (line {line})"


def key(rangevar: ast.RangeVar) -> str:
    """A relation's name as the replay compares it: ``public`` is the unqualified default."""
    schema = rangevar.schemaname
    name = rangevar.relname or ""
    return name if schema in (None, "public") else f"{schema}.{name}"


def display(name: str) -> str:
    """A name as one would write it in SQL: quoted where folding would change it."""
    return ".".join(part if _PLAIN_NAME.fullmatch(part) else '"' + part.replace('"', '""') + '"'
                    for part in name.split(".")) if name else name


def kind(node: ast.Node) -> str:
    return _KINDS.get(type(node), type(node).__name__.removesuffix("Stmt"))

