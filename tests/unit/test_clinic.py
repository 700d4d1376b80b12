"""The migration clinic on fixture histories: each rule fires on a folder that shows its bug
(the first users' runbook's seven among them) and stays quiet on a clean one."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pglast import ast

from orchestrator.clinic import examine, prisma, sql
from orchestrator.clinic.examine import Finding
from orchestrator.clinic.findings import Migration
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, GateRefused
from orchestrator.postgres import migrations
from orchestrator.postgres.migrations import ToolState
from tests.support.settings import make_settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "clinic"
PRISMA = "prisma/migrations"


def settings_for(case: str | Path, tool: str = "prisma", files: str = PRISMA,
                 **lint: Any) -> Settings:
    """Settings whose config sits in the fixture folder (squawk off unless asked: these
    tests are about the clinic's own rules; squawk has its own below)."""
    folder = case if isinstance(case, Path) else FIXTURES / case
    return make_settings(folder, migrate={"command": "true", "tool": tool, "files": files},
                         lint={"squawk": False, **lint})


def seen(findings: list[Finding]) -> list[tuple[str, int, str, str]]:
    return [(str(f.file), f.line, f.rule, f.severity) for f in findings]


def state(applied: tuple[str, ...], pending: tuple[str, ...]) -> ToolState:
    return ToolState("prisma", "_prisma_migrations", applied, (), pending)


ADD_STATUS = f"{PRISMA}/20240101000000_add_status/migration.sql"
ORDER_ITEMS = f"{PRISMA}/20240101000000_create_order_items/migration.sql"
ADD_PHONE = f"{PRISMA}/20240103000000_add_phone/migration.sql"
COUPONS = f"{PRISMA}/20240101000000_add_coupons/migration.sql"
NOT_RERUNNABLE = f"{PRISMA}/20240101000000_coupons/migration.sql"
INIT = f"{PRISMA}/20240101000000_init/migration.sql"

EXPECTED = {
    # the runbook's bugs
    "altered-before-created": [(ADD_STATUS, 2, "table-used-before-created", "error")],
    "foreign-key-to-later-table": [(ORDER_ITEMS, 9, "foreign-key-to-later-table", "error")],
    "column-added-twice": [(ADD_PHONE, 2, "column-added-twice", "error"),
                           (ADD_PHONE, 2, "missing-if-not-exists", "warning")],
    "cli-output": [(COUPONS, line, "prisma-cli-output", "error") for line in (1, 2, 3, 4)],
    "loose-sql": [(f"{PRISMA}/20240101000000_init/backfill.sql", 1, "prisma-unused-sql",
                   "warning"),
                  (f"{PRISMA}/fix_orders.sql", 1, "prisma-loose-sql", "error"),
                  (f"{PRISMA}/fixes/backfill.sql", 1, "prisma-loose-sql", "error"),
                  (f"{PRISMA}/hotfix/down.sql", 1, "prisma-unused-sql", "warning")],
    "not-rerunnable": [(NOT_RERUNNABLE, line, "missing-if-not-exists", "warning")
                       for line in (2, 8, 11)],
    # the other rules, and names compared as PostgreSQL compares them
    "sql-syntax": [(INIT, 3, "sql-syntax", "error")],
    "same-file-order": [(INIT, 3, "foreign-key-to-later-table", "error")],
    "quoted-names": [(f"{PRISMA}/20240101000000_orders/migration.sql", 3,
                      "table-used-before-created", "error")],
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_rule_fires_on_the_bug_it_names_and_nothing_else(case: str) -> None:
    assert seen(examine.examine(settings_for(case), None)) == EXPECTED[case]


def test_the_clean_history_is_quiet_squawk_included() -> None:
    assert examine.examine(settings_for("clean", squawk=True), None) == []


@pytest.mark.parametrize("case", ["clean", "column-retyped", "prisma-baseline"])
def test_a_sound_history_is_quiet(case: str) -> None:
    """column-retyped: Prisma's ``DROP COLUMN "age", ADD COLUMN "age" TEXT`` in one statement
    (the DROP runs first); prisma-baseline: the documented ``0_init`` folder, which Prisma
    applies first because it sorts first."""
    assert examine.examine(settings_for(case), None) == []


def write_prisma(root: Path, migrations: dict[str, str]) -> None:
    for name, text in migrations.items():
        path = root / PRISMA / name / "migration.sql"
        path.parent.mkdir(parents=True)
        path.write_text(text)


USER_WITH_AGE = 'CREATE TABLE IF NOT EXISTS "User" ("id" bigint, "age" integer);\n'
RETYPE_AGE = 'ALTER TABLE "User" DROP COLUMN "age",\nADD COLUMN "age" TEXT NOT NULL;\n'


@pytest.mark.parametrize(("migrations", "expected"), [
    ({"20240101000000_init": USER_WITH_AGE,
      "20240102000000_nick": 'ALTER TABLE "User" ADD COLUMN IF NOT EXISTS "nick" text,\n'
                             'ADD COLUMN "nick" text;\n'},
     ("20240102000000_nick", 2, "line 1 of this migration")),
    ({"20240101000000_init": USER_WITH_AGE, "20240102000000_age_to_text": RETYPE_AGE,
      "20240103000000_age_again": 'ALTER TABLE "User" ADD COLUMN "age" text;\n'},
     ("20240103000000_age_again", 1, "20240102000000_age_to_text (line 2)")),
    ({"20240101000000_init": 'ALTER TABLE "User" ADD COLUMN "age" text,\n'
                             '  DROP COLUMN "id",\n  ADD COLUMN "age" text;\n'},
     ("20240101000000_init", 3, "line 1 of this migration")),
], ids=["twice-in-one-statement", "again-after-a-retype", "a-drop-of-another-column"])
def test_a_column_added_twice_still_fires_around_drops(
        tmp_path: Path, migrations: dict[str, str], expected: tuple[str, int, str]) -> None:
    write_prisma(tmp_path, migrations)
    found = [f for f in examine.examine(settings_for(tmp_path), None)
             if f.rule == "column-added-twice"]
    name, line, earlier = expected
    assert seen(found) == [(f"{PRISMA}/{name}/migration.sql", line, "column-added-twice",
                            "error")]
    assert "already defines it" in found[0].message and earlier in found[0].message


def test_a_column_dropped_and_added_back_in_one_statement_is_rerunnable(
        tmp_path: Path) -> None:
    """Run again, the DROP makes way for the ADD; an ADD of another column still fails."""
    write_prisma(tmp_path, {"20240101000000_a": USER_WITH_AGE + RETYPE_AGE
                            + 'ALTER TABLE "User" DROP COLUMN "age",\n'
                              'ADD COLUMN "email" text;\n'})
    found = examine.examine(settings_for(tmp_path), None)
    assert [(f.line, f.rule) for f in found] == [(5, "missing-if-not-exists")]
    assert "ADD COLUMN email" in found[0].message


def test_prisma_runs_any_folder_s_migration_sql_and_warns_of_other_sql_beside_it(
        tmp_path: Path) -> None:
    write_prisma(tmp_path, {"0_init": "CREATE TABLE IF NOT EXISTS a (id bigint);\n",
                            "20240102000000_b": "ALTER TABLE a ADD COLUMN IF NOT EXISTS b int;\n"})
    root = tmp_path / PRISMA
    (root / "20240102000000_b" / "down.sql").write_text("ALTER TABLE a DROP COLUMN b;\n")
    (root / "20240102000000_b" / "old").mkdir()
    (root / "20240102000000_b" / "old" / "migration.sql").write_text("SELECT 1;\n")
    (root / "notes").mkdir()
    (root / "notes" / "fix.sql").write_text("SELECT 1;\n")
    (root / "fix.sql").write_text("SELECT 1;\n")
    found = examine.examine(settings_for(tmp_path), None)
    assert seen(found) == [
        (f"{PRISMA}/20240102000000_b/down.sql", 1, "prisma-unused-sql", "warning"),
        (f"{PRISMA}/20240102000000_b/old/migration.sql", 1, "prisma-unused-sql", "warning"),
        (f"{PRISMA}/fix.sql", 1, "prisma-loose-sql", "error"),
        (f"{PRISMA}/notes/fix.sql", 1, "prisma-loose-sql", "error")]
    assert str(found[0]).endswith(
        "prisma-unused-sql: Prisma never runs this file: it runs only"
        " 20240102000000_b/migration.sql from this migration folder. It holds 1 statement(s):"
        " ALTER TABLE a")
    assert "after every timestamped migration" not in " ".join(f.message for f in found)


def test_layout_findings_do_not_depend_on_what_is_applied() -> None:
    name = "20240101000000_init"
    applied = state((name, "hotfix"), ())
    assert seen(examine.examine(settings_for("loose-sql"), applied)) == EXPECTED["loose-sql"]


def test_flyway_placeholders_are_read_as_names_or_numbers() -> None:
    assert examine.examine(settings_for("flyway-placeholders", "flyway", "sql"), None) == []
    migration = Migration("V1__a.sql", Path("V1__a.sql"), True)
    statements, problem = sql.parse(
        migration, "GRANT SELECT ON ${schema}.t TO ${flyway:user};\n"
                   "ALTER TABLE ${schema}.t ADD COLUMN IF NOT EXISTS c varchar(${length});",
        placeholders=True)
    assert problem is None
    assert [sql.kind(s.node) for s in statements] == ["GRANT", "ALTER TABLE"]
    assert isinstance(statements[1].node, ast.AlterTableStmt)
    assert sql.key(statements[1].node.relation) == "placeholder_schema.t"


def test_flyway_placeholders_hide_no_real_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "V1__init.sql").write_text(
        "CREATE TABLE IF NOT EXISTS ${schema}.a (id bigint);\n"
        "CREATE TABLE IF NOT EXISTS ${schema}.b (id bigint,);\n")
    (tmp_path / "sql" / "V2__later.sql").write_text(
        "ALTER TABLE ${schema}.c ADD COLUMN IF NOT EXISTS x int;\n")
    (tmp_path / "sql" / "V3__c.sql").write_text(
        "CREATE TABLE IF NOT EXISTS ${schema}.c (id bigint);\n")
    found = examine.examine(settings_for(tmp_path, "flyway", "sql"), None)
    assert seen(found) == [("sql/V1__init.sql", 2, "sql-syntax", "error"),
                           ("sql/V2__later.sql", 1, "table-used-before-created", "error")]


def test_prisma_has_no_placeholders(tmp_path: Path) -> None:
    write_prisma(tmp_path, {"20240101000000_a": "CREATE TABLE IF NOT EXISTS ${x} (id int);\n"})
    assert [f.rule for f in examine.examine(settings_for(tmp_path), None)] == ["sql-syntax"]


def test_findings_read_file_line_rule_message() -> None:
    found = examine.examine(settings_for("altered-before-created"), None)
    assert [str(f) for f in found] == [
        f"{ADD_STATUS}:2: error: table-used-before-created: ALTER TABLE uses orders before"
        " 20240102000000_create_orders (line 2) creates it"]


def test_flyway_history_runs_in_version_order_not_name_order() -> None:
    found = examine.examine(settings_for("flyway-version-order", "flyway", "sql"), None)
    assert seen(found) == [("sql/V9__add_status.sql", 1, "table-used-before-created", "error")]


def test_cli_output_hides_no_real_syntax_error_around_it(tmp_path: Path) -> None:
    migration = tmp_path / PRISMA / "20240101000000_x" / "migration.sql"
    migration.parent.mkdir(parents=True)
    migration.write_text("warn You are about to drop the column\nCREATE TABLE IF NOT EXISTS"
                         " a (id bigint);\nCREATE TABLE IF NOT EXISTS b (id bigint,);\n")
    found = examine.examine(settings_for(tmp_path), None)
    assert [(f.line, f.rule) for f in found] == [(1, "prisma-cli-output"), (3, "sql-syntax")]


@pytest.mark.parametrize("sql", [
    "SELECT 'a\nwarn: inside a string';",
    "DO $$ BEGIN\nwarn := 1; END $$;",
    "/* a comment\nwarn: inside it */ SELECT 1;",
    "CREATE TABLE IF NOT EXISTS t (\nwarn boolean);",
    "  warn indented is not pasted output;",
])
def test_cli_output_is_only_found_where_a_statement_could_start(sql: str) -> None:
    assert prisma.cli_output_lines(sql) == []


def test_applied_migrations_are_not_linted_again() -> None:
    name = "20240101000000_coupons"
    found = examine.examine(settings_for("not-rerunnable"), state((name,), ()))
    assert found == []


def test_an_order_bug_the_database_already_went_through_is_not_reported() -> None:
    first, second = "20240101000000_add_status", "20240102000000_create_orders"
    settings = settings_for("altered-before-created")
    assert examine.examine(settings, state((first, second), ())) == []
    assert seen(examine.examine(settings, state((first,), (second,)))) == \
        EXPECTED["altered-before-created"]


def test_an_applied_migration_whose_file_changed_is_an_error() -> None:
    init, status = "20240101000000_init", "20240102000000_add_status"
    original = (FIXTURES / "clean" / PRISMA / init / "migration.sql").read_bytes()
    checksums = {init: hashlib.sha256(original).hexdigest(),
                 status: hashlib.sha256(b"ALTER TABLE x ADD COLUMN y text;\n").hexdigest()}
    recorded = ToolState("prisma", "_prisma_migrations", (init, status), (), (),
                         checksums=checksums)
    found = examine.examine(settings_for("clean"), recorded)
    assert seen(found) == [(f"{PRISMA}/{status}/migration.sql", 1, "prisma-checksum-changed",
                            "error")]
    assert "changed after it was applied" in found[0].message


def test_checksums_compare_as_prisma_compares_them() -> None:
    script = b"CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"
    crlf = hashlib.sha256(script.replace(b"\n", b"\r\n")).hexdigest()
    unpadded = "".join(f"{byte:x}" for byte in hashlib.sha256(script).digest())
    assert prisma.matches(script, crlf)  # checked out with other line endings
    assert prisma.matches(script, unpadded)  # written by an old schema engine
    assert not prisma.matches(script + b"-- edited\n", crlf)


def test_idempotency_warnings_can_be_turned_off() -> None:
    assert examine.examine(settings_for("not-rerunnable", idempotency=False), None) == []


def test_errors_promote_a_warning_by_rule_name() -> None:
    found = examine.examine(settings_for("not-rerunnable", errors=["missing-if-not-exists"]),
                           None)
    assert {f.severity for f in found} == {"error"}


def test_squawk_findings_are_warnings_with_the_files_line() -> None:
    found = examine.examine(settings_for("squawk", squawk=True), None)
    assert seen(found) == [(f"{PRISMA}/20240101000000_total/migration.sql", 4,
                            "squawk:adding-required-field", "warning")]


@pytest.mark.parametrize("name", ["adding-required-field", "squawk:adding-required-field"])
def test_errors_promote_a_squawk_rule(name: str) -> None:
    found = examine.examine(settings_for("squawk", squawk=True, errors=[name]), None)
    assert [(f.rule, f.severity) for f in found] == [("squawk:adding-required-field", "error")]


def test_squawk_exclude_silences_a_rule_and_refuses_an_unknown_one() -> None:
    settings = settings_for("squawk", squawk=True, squawk_exclude=["adding-required-field"])
    assert examine.examine(settings, None) == []
    with pytest.raises(ConfigError, match="'no-such-rule' is not a squawk rule"):
        examine.examine(settings_for("squawk", squawk=True, squawk_exclude=["no-such-rule"]),
                       None)


def test_squawk_overlapping_our_idempotency_rule_is_said_once() -> None:
    found = examine.examine(settings_for("not-rerunnable", squawk=True), None)
    assert "squawk:prefer-robust-stmts" not in {f.rule for f in found}
    assert {f.rule for f in found} >= {"missing-if-not-exists", "squawk:prefer-bigint-over-int"}


def test_a_missing_squawk_is_one_warning_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    found = examine.examine(settings_for("clean", squawk=True), None)
    assert [(str(f.file), f.line, f.rule, f.severity) for f in found] == [
        (PRISMA, 0, "squawk-missing", "warning")]
    assert str(found[0]).startswith(
        f"{PRISMA}: warning: squawk-missing: the squawk binary is neither")


def test_summary_counts_errors_warnings_and_files() -> None:
    found = examine.examine(settings_for("column-added-twice"), None)
    assert examine.summary(found, everything=True) == "1 error, 1 warning in 1 file"
    # A Prisma migration runs once: its missing IF NOT EXISTS cannot matter.
    assert examine.summary(found) == ("1 error, 0 warnings in 1 file (1 that cannot matter"
                                      " not shown: `window lint --all`)")
    assert examine.summary([]) == "no errors, no warnings"


def test_the_gate_refuses_on_errors_and_hands_back_warnings(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GateRefused, match="migration clinic found 1 error, 0 warnings"):
        examine.gate(settings_for("column-added-twice"), None)
    assert "column-added-twice" in capsys.readouterr().out
    warnings = examine.gate(settings_for("squawk", squawk=True), None)
    assert [f.rule for f in warnings] == ["squawk:adding-required-field"]
    assert examine.gate(settings_for("column-added-twice", enabled=False), None) == []


def test_an_unknown_lint_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key lint\.squawk_rules"):
        settings_for("clean", squawk_rules=[])


def window_lint(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "orchestrator", "lint", *extra], cwd=project,
                          env=env, capture_output=True, text=True, check=False, timeout=60)


def project(tmp_path: Path, case: str, migrate: str = 'tool = "prisma"\nfiles = "prisma/migrations"'
            ) -> Path:
    folder = tmp_path / case
    shutil.copytree(FIXTURES / case, folder)
    (folder / "window.toml").write_text(
        '[window]\nconfirm_phrase = "GO"\n[banner]\non = "true"\noff = "true"\n'
        f'[migrate]\ncommand = "true"\n{migrate}\n')
    return folder


def test_window_lint_prints_findings_and_a_summary_and_exits_3_on_errors(
        tmp_path: Path) -> None:
    done = window_lint(project(tmp_path, "cli-output"))
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{COUPONS}:1: error: prisma-cli-output: Prisma CLI output pasted")
    assert lines[-1] == "4 errors, 0 warnings in 1 file"
    assert "DATABASE_URL is not set: every migration file is linted as pending" in done.stderr
    assert "Traceback" not in done.stderr


def test_window_lint_exits_0_on_a_clean_history(tmp_path: Path) -> None:
    done = window_lint(project(tmp_path, "clean"))
    assert (done.returncode, done.stdout) == (0, "no errors, no warnings\n"), done.stderr
    assert "linting 2 pending of 2 migration(s) in prisma/migrations" in done.stderr


def test_window_lint_without_a_tool_says_there_is_nothing_to_lint(tmp_path: Path) -> None:
    done = window_lint(project(tmp_path, "clean", migrate=""))
    # Only that: "no errors, no warnings" would be a verdict on files it never read.
    assert (done.returncode, done.stdout) == (0, "")
    assert "nothing to lint: [migrate] files names the migration files" in done.stderr


def test_a_folder_of_plain_sql_files_is_linted_and_fingerprinted(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    (folder / "sql").mkdir(parents=True)
    (folder / "sql" / "001_users.sql").write_text("CREATE TABLE users (id bigint);\n")
    (folder / "sql" / "002_users_again.sql").write_text("CREATE TABLE users (id bigint);\n")
    (folder / "window.toml").write_text(
        '[window]\nconfirm_phrase = "GO"\n[banner]\non = "true"\noff = "true"\n'
        '[migrate]\ncommand = "psql -f sql/002_users_again.sql"\nfiles = "sql"\n')

    done = window_lint(folder, "--all")

    assert done.returncode == 3, done.stdout + done.stderr
    assert ("sql/002_users_again.sql:1: error: created-twice: CREATE TABLE users fails the"
            " first time it runs: 001_users.sql (line 1) already creates it") in done.stdout
    assert "missing-if-not-exists" in done.stdout, "--all shows the rest too"
    settings = settings_for(folder, tool="none", files="sql")
    before = migrations.fingerprint(settings)
    (folder / "sql" / "002_users_again.sql").write_text("SELECT 1;\n")
    assert before is not None and migrations.fingerprint(settings) != before


def test_window_lint_config_errors_exit_2(tmp_path: Path) -> None:
    folder = project(tmp_path, "clean")
    with (folder / "window.toml").open("a") as toml:
        toml.write("[lint]\nsquawk_rules = []\n")
    done = window_lint(folder)
    assert done.returncode == 2
    assert "unknown key lint.squawk_rules" in done.stderr


def test_lint_warnings_demotes_one_of_the_clinics_own_rules() -> None:
    """An escape hatch narrower than `enabled = false`: the rule is still reported."""
    demoted = examine.examine(settings_for("column-added-twice",
                                          warnings=["column-added-twice"],
                                          idempotency=False), None)
    assert {(f.rule, f.severity) for f in demoted} == {("column-added-twice", "warning")}
    with pytest.raises(ConfigError, match=r"\[lint\] warnings: 'no-such-rule'"):
        examine.examine(settings_for("clean", warnings=["no-such-rule"]), None)


def test_psqls_own_commands_are_left_out_but_a_backslash_inside_a_string_is_sql() -> None:
    text = ("\\set ON_ERROR_STOP on\nBEGIN;\n"
            "CREATE FUNCTION f() RETURNS text AS $$ SELECT 'a\n\\' $$ LANGUAGE sql;\n"
            "\\echo done\nSELECT 1\n\\gset\n")

    assert sql.psql_commands(text) == [1, 5, 7]
    assert sql.psql_commands("SELECT 1;\n") == []
