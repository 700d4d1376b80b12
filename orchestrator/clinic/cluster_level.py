"""The migration clinic's ``cluster-level`` rule: statements that change the PostgreSQL
cluster rather than the database the window migrates.

Roles, role memberships and role settings, ``ALTER SYSTEM``, tablespaces and databases live in
the cluster's shared catalogs, outside the database that was backed up: the rollback restores
the database and leaves them as the migration made them (it even copies the migrated
database's grants and settings onto the restored copy). The rehearsal runs the same migration
first, so when it rehearses on production's server (staging there, or a clone beside
production) the change reaches that server before the window has proved anything. Only
pending migrations are handed here: an applied one already made its change. Statements are
told apart by pglast's parse tree and described without their options, so a ``CREATE ROLE
... PASSWORD`` never echoes the password.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pglast import ast
from pglast.enums import ObjectType, RoleSpecType, RoleStmtType, VariableSetKind

from orchestrator.clinic.findings import Finding
from orchestrator.clinic.sql import Statement, display

RULE = "cluster-level"
WHY = ("changes the cluster, not the database: a rollback will NOT undo it (it lives outside"
       " the database the backup restores), and the rehearsal already runs it on production's"
       " server when it rehearses there (staging on that server, or clone_on = \"production\");"
       ' if it is meant, allow it with [lint] warnings = ["cluster-level"]')
# Objects of the cluster that RENAME and OWNER TO reach (ALTER TABLE ... OWNER TO is not one).
_SHARED = {ObjectType.OBJECT_ROLE: "ROLE", ObjectType.OBJECT_DATABASE: "DATABASE",
           ObjectType.OBJECT_TABLESPACE: "TABLESPACE"}
_CREATE_ROLE = {RoleStmtType.ROLESTMT_USER: "USER", RoleStmtType.ROLESTMT_GROUP: "GROUP"}
# The statements named by one verb and the node's name: DROP DATABASE IF EXISTS ... WITH
# (FORCE) reads as DROP DATABASE, its options left out.
_NAMED = {ast.CreateTableSpaceStmt: ("CREATE TABLESPACE", "tablespacename"),
          ast.AlterTableSpaceOptionsStmt: ("ALTER TABLESPACE", "tablespacename"),
          ast.DropTableSpaceStmt: ("DROP TABLESPACE", "tablespacename"),
          ast.CreatedbStmt: ("CREATE DATABASE", "dbname"),
          ast.AlterDatabaseStmt: ("ALTER DATABASE", "dbname"),
          ast.AlterDatabaseRefreshCollStmt: ("ALTER DATABASE", "dbname"),
          ast.DropdbStmt: ("DROP DATABASE", "dbname")}


def changes(statements: Sequence[Statement]) -> list[Finding]:
    """A ``cluster-level`` error for each statement that changes the cluster."""
    return [Finding(s.migration.path, s.line, RULE, f"{what} {WHY}")
            for s in statements if (what := described(s.node)) is not None]


def described(node: ast.Node) -> str | None:
    """What a cluster-level statement changes, as SQL without its options; None for any
    other statement."""
    if type(node) in _NAMED:
        verb, member = _NAMED[type(node)]
        return f"{verb} {display(getattr(node, member) or '')}"
    describe = _DESCRIBE.get(type(node))
    return describe(node) if describe else None


def _create_role(node: ast.CreateRoleStmt) -> str:
    word = _CREATE_ROLE.get(node.stmt_type, "ROLE") if node.stmt_type else "ROLE"
    return f"CREATE {word} {display(node.role or '')}"


def _role_settings(node: ast.AlterRoleSetStmt) -> str:
    """ALTER ROLE r [IN DATABASE d] SET x: pg_db_role_setting is shared by every database."""
    where = f" IN DATABASE {display(node.database)}" if node.database else ""
    return f"ALTER ROLE {_role(node.role) if node.role else 'ALL'}{where} {_set(node.setstmt)}"


def _grant_role(node: ast.GrantRoleStmt) -> str:
    granted = ", ".join(display(p.priv_name or "") for p in node.granted_roles or ())
    grantees = ", ".join(_role(r) for r in node.grantee_roles or ())
    return f"GRANT {granted} TO {grantees}" if node.is_grant \
        else f"REVOKE {granted} FROM {grantees}"


def _rename(node: ast.RenameStmt) -> str | None:
    word = _SHARED.get(node.renameType) if node.renameType is not None else None
    return f"ALTER {word} {display(node.subname or '')} RENAME TO {display(node.newname or '')}" \
        if word else None


def _owner(node: ast.AlterOwnerStmt) -> str | None:
    word = _SHARED.get(node.objectType) if node.objectType is not None else None
    name = node.object.sval if isinstance(node.object, ast.String) else None
    return f"ALTER {word} {display(name or '')} OWNER TO {_role(node.newowner)}" \
        if word else None


def _role(spec: ast.RoleSpec | None) -> str:
    """A role as written: its name, or CURRENT_USER, SESSION_USER, PUBLIC ..."""
    if spec is None or spec.roletype in (None, RoleSpecType.ROLESPEC_CSTRING):
        return display(spec.rolename or "") if spec else ""
    return spec.roletype.name.removeprefix("ROLESPEC_")


def _set(setstmt: ast.VariableSetStmt | None) -> str:
    """SET name, RESET name or RESET ALL; the value is left out."""
    if setstmt is None or setstmt.kind == VariableSetKind.VAR_RESET_ALL:
        return "RESET ALL"
    verb = "RESET" if setstmt.kind == VariableSetKind.VAR_RESET else "SET"
    return f"{verb} {setstmt.name}"


_DESCRIBE: dict[type[ast.Node], Callable[[Any], str | None]] = {
    ast.CreateRoleStmt: _create_role,
    ast.AlterRoleStmt: lambda node: f"ALTER ROLE {_role(node.role)}",
    ast.AlterRoleSetStmt: _role_settings,
    ast.DropRoleStmt: lambda node: "DROP ROLE " + ", ".join(_role(r) for r in node.roles or ()),
    ast.GrantRoleStmt: _grant_role,
    ast.AlterSystemStmt: lambda node: f"ALTER SYSTEM {_set(node.setstmt)}",
    ast.AlterDatabaseSetStmt: lambda node: f"ALTER DATABASE {display(node.dbname or '')}"
                                           f" {_set(node.setstmt)}",
    ast.RenameStmt: _rename,
    ast.AlterOwnerStmt: _owner,
}
