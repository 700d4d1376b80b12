"""The clinic's ``cluster-level`` rule: a pending migration that changes roles, ``ALTER
SYSTEM``, tablespaces or databases is an error (a rollback does not undo it), unless
``[lint] warnings`` allows it; database-level statements and applied migrations are left
alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.clinic import examine
from orchestrator.clinic.examine import Finding
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, GateRefused
from orchestrator.postgres.migrations import ToolState
from tests.support.settings import make_settings

PRISMA = "prisma/migrations"
FIRST, SECOND = "20240101000000_roles", "20240102000000_more_roles"


def prisma_history(root: Path, migrations: dict[str, str], **lint: Any) -> Settings:
    """Prisma's layout under ``root``, and settings that read it (squawk off: its opinions
    are not this rule's)."""
    for name, text in migrations.items():
        path = root / PRISMA / name / "migration.sql"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return make_settings(root, migrate={"command": "true", "tool": "prisma", "files": PRISMA},
                         lint={"squawk": False, "idempotency": False, **lint})


def cluster_findings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.rule == "cluster-level"]


@pytest.mark.parametrize(("statement", "what"), [
    ("CREATE ROLE reporting LOGIN PASSWORD 'hunter2'", "CREATE ROLE reporting"),
    ("CREATE USER app", "CREATE USER app"),
    ('CREATE GROUP "Staff"', 'CREATE GROUP "Staff"'),
    ("ALTER ROLE reporting NOLOGIN", "ALTER ROLE reporting"),
    ("ALTER USER app PASSWORD 'hunter2'", "ALTER ROLE app"),
    ("ALTER GROUP staff ADD USER app", "ALTER ROLE staff"),
    ("ALTER USER app RENAME TO app2", "ALTER ROLE app RENAME TO app2"),
    ("DROP ROLE IF EXISTS reporting, app", "DROP ROLE reporting, app"),
    ("DROP USER app", "DROP ROLE app"),
    ("DROP GROUP staff", "DROP ROLE staff"),
    ("GRANT staff TO app WITH ADMIN OPTION", "GRANT staff TO app"),
    ("REVOKE staff FROM app", "REVOKE staff FROM app"),
    ("ALTER ROLE app SET statement_timeout = '5s'", "ALTER ROLE app SET statement_timeout"),
    ("ALTER USER CURRENT_USER IN DATABASE shop RESET ALL",
     "ALTER ROLE CURRENT_USER IN DATABASE shop RESET ALL"),
    ("ALTER ROLE ALL RESET work_mem", "ALTER ROLE ALL RESET work_mem"),
    ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM SET work_mem"),
    ("ALTER SYSTEM RESET ALL", "ALTER SYSTEM RESET ALL"),
    ("CREATE TABLESPACE fast LOCATION '/ssd'", "CREATE TABLESPACE fast"),
    ("ALTER TABLESPACE fast SET (random_page_cost = 1.1)", "ALTER TABLESPACE fast"),
    ("ALTER TABLESPACE fast RENAME TO quick", "ALTER TABLESPACE fast RENAME TO quick"),
    ("ALTER TABLESPACE fast OWNER TO app", "ALTER TABLESPACE fast OWNER TO app"),
    ("DROP TABLESPACE IF EXISTS fast", "DROP TABLESPACE fast"),
    ("CREATE DATABASE reports OWNER app", "CREATE DATABASE reports"),
    ("ALTER DATABASE shop SET search_path = app, public", "ALTER DATABASE shop SET search_path"),
    ("ALTER DATABASE shop CONNECTION LIMIT 10", "ALTER DATABASE shop"),
    ("ALTER DATABASE shop RENAME TO shop_old", "ALTER DATABASE shop RENAME TO shop_old"),
    ("ALTER DATABASE shop OWNER TO app", "ALTER DATABASE shop OWNER TO app"),
    ("ALTER DATABASE shop REFRESH COLLATION VERSION", "ALTER DATABASE shop"),
    ("DROP DATABASE IF EXISTS reports WITH (FORCE)", "DROP DATABASE reports"),
])
def test_each_cluster_level_statement_is_an_error_naming_what_it_changes(
        tmp_path: Path, statement: str, what: str) -> None:
    settings = prisma_history(tmp_path, {FIRST: f"SELECT 1;\n\n{statement};\n"})
    found = examine.examine(settings, None)
    assert [(str(f.file), f.line, f.rule, f.severity) for f in found] == [
        (f"{PRISMA}/{FIRST}/migration.sql", 3, "cluster-level", "error")]
    assert found[0].message.startswith(f"{what} changes the cluster, not the database:")
    assert "hunter2" not in found[0].message  # a statement's options are never echoed


def test_the_finding_says_a_rollback_will_not_undo_it_and_how_to_allow_it(
        tmp_path: Path) -> None:
    settings = prisma_history(tmp_path, {FIRST: "CREATE ROLE reporting;\n"})
    assert [str(f) for f in examine.examine(settings, None)] == [
        f"{PRISMA}/{FIRST}/migration.sql:1: error: cluster-level: CREATE ROLE reporting changes the"
        " cluster, not the database: a rollback will NOT undo it (it lives outside the"
        " database the backup restores), and the rehearsal already runs it on production's"
        ' server when it rehearses there (staging on that server, or clone_on = "production");'
        ' if it is meant, allow it with [lint] warnings = ["cluster-level"]']


@pytest.mark.parametrize("statement", [
    "GRANT SELECT ON orders TO reporting",
    "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reporting",
    "ALTER TABLE orders OWNER TO app",
    "ALTER TABLE orders RENAME TO purchases",
    "ALTER SCHEMA app OWNER TO app",
    "REASSIGN OWNED BY app TO reporting",
    "DROP OWNED BY app",
    "SET ROLE app",
    "SET search_path = app",
])
def test_database_level_statements_are_not_cluster_level(
        tmp_path: Path, statement: str) -> None:
    settings = prisma_history(tmp_path, {FIRST: f"{statement};\n"})
    assert cluster_findings(examine.examine(settings, None)) == []


def test_only_pending_migrations_are_reported(tmp_path: Path) -> None:
    """The applied migration's role already exists: it ran, and reporting it now stops no
    harm. Without the tool's table every file counts as pending."""
    settings = prisma_history(tmp_path, {FIRST: "CREATE ROLE reporting;\n",
                                         SECOND: "SELECT 1;\nGRANT reporting TO app;\n"})
    applied = ToolState("prisma", "_prisma_migrations", (FIRST,), (), (SECOND,))
    found = examine.examine(settings, applied)
    assert [(str(f.file), f.line, f.rule) for f in found] == [
        (f"{PRISMA}/{SECOND}/migration.sql", 2, "cluster-level")]
    assert [f.file.parent.name for f in examine.examine(settings, None)] == [FIRST, SECOND]


def test_lint_warnings_allows_cluster_level_statements(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Allowed, the statement is still shown (and journaled as a warning); the window goes
    on instead of refusing."""
    migrations = {FIRST: "CREATE ROLE reporting;\nALTER SYSTEM SET work_mem = '64MB';\n"}
    refused = prisma_history(tmp_path / "refused", migrations)
    with pytest.raises(GateRefused, match="migration clinic found 2 errors"):
        examine.gate(refused, None)
    allowed = prisma_history(tmp_path / "allowed", migrations, warnings=["cluster-level"])
    warnings = examine.gate(allowed, None)
    assert [(f.line, f.rule, f.severity) for f in warnings] == [
        (1, "cluster-level", "warning"), (2, "cluster-level", "warning")]
    assert "ALTER SYSTEM SET work_mem changes the cluster" in capsys.readouterr().out


def test_an_unknown_demoted_rule_names_cluster_level_among_the_clinic_s_rules(
        tmp_path: Path) -> None:
    settings = prisma_history(tmp_path, {FIRST: "SELECT 1;\n"}, warnings=["cluster"])
    with pytest.raises(ConfigError, match=r"'cluster' is not one of the clinic's rules \(.*"
                                          r"column-added-twice, cluster-level, .*sql-syntax\)"):
        examine.examine(settings, None)
