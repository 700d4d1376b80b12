"""The first users' incident, and what else a real Prisma history shows the clinic.

Their migration held pasted Prisma CLI output at its top and re-created a table an earlier
migration creates: applied to production it failed (P3018) and blocked every later deploy
(P3009). Each history here is built in the test, as such a project has it.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.clinic import examine
from tests.unit.test_clinic import PRISMA, seen, settings_for, write_prisma

# What `npx prisma migrate diff --script > migration.sql` leaves at the top of the file with
# Prisma 6: the config and schema notices, two warnings with their second lines, the update
# box. Thirteen lines, not one of them SQL.
PASTED = """Loaded Prisma config from "/app/frontend/prisma.config.ts".
Prisma config detected, skipping environment variable loading.
Prisma schema loaded from prisma/schema.prisma
warn The configuration property `package.json#prisma` is deprecated.
For more information, see: https://pris.ly/prisma-config
warn Versions of prisma@6.16.2 and @prisma/client@6.15.0 don't match.
This might lead to unexpected behavior.
Please make sure they have the same version.
┌─────────────────────────────────────────────────────────┐
│  Update available 6.16.2 -> 6.17.0                      │
│  Run the following to update                            │
│    npm i --save-dev prisma@latest                       │
└─────────────────────────────────────────────────────────┘
"""
INIT = """-- CreateEnum
CREATE TYPE "Role" AS ENUM ('CUSTOMER', 'ADMIN');

-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    "email" TEXT NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'CUSTOMER',
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
"""
# The incident's file: the pasted output, then a table the first migration already creates.
INCIDENT = PASTED + """-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Order" ("id" SERIAL NOT NULL, "userId" INTEGER NOT NULL);
"""
FIRST, SECOND = "20251101000000_init", "20251122000000_orders"


def test_every_pasted_line_and_the_re_created_table_are_errors_in_one_run(
        tmp_path: Path) -> None:
    write_prisma(tmp_path, {FIRST: INIT, SECOND: INCIDENT})

    found = examine.shown(examine.examine(settings_for(tmp_path), None))

    second = f"{PRISMA}/{SECOND}/migration.sql"
    assert seen(found) == [*((second, n, "prisma-cli-output", "error") for n in range(1, 14)),
                           (second, 15, "created-twice", "error")]
    assert found[-1].message == (
        'CREATE TABLE "User" fails the first time it runs: 20251101000000_init (line 5)'
        " already creates it (drop this statement, or add IF NOT EXISTS)")
    assert "Prisma CLI output pasted" in found[0].message
    assert "not SQL (no statement starts with 'Please')" in found[7].message


def test_a_loose_file_says_what_it_holds_and_what_it_would_re_create(tmp_path: Path) -> None:
    write_prisma(tmp_path, {FIRST: INIT})
    (tmp_path / PRISMA / "fix_orders.sql").write_text(INCIDENT)

    found = examine.shown(examine.examine(settings_for(tmp_path), None))

    loose = f"{PRISMA}/fix_orders.sql"
    assert seen(found) == [(loose, 1, "prisma-cli-output", "error"),
                           (loose, 1, "prisma-loose-sql", "error"),
                           *((loose, n, "prisma-cli-output", "error") for n in range(2, 14))]
    # Giving it a folder of its own, as it is, was the step that caused the incident.
    assert found[1].message == (
        "Prisma never runs this file: only <folder>/migration.sql is a migration. It holds 2"
        ' statement(s): CREATE TABLE "User", CREATE TABLE "Order". Do not give it a migration'
        " folder as it is: it would fail the first time it runs (CREATE TABLE \"User\" (already"
        " created by 20251101000000_init); 13 line(s) that are not SQL (listed)); move only"
        " what production still needs into a new migration folder, or delete the file")


def test_a_sound_loose_file_is_told_how_to_become_a_migration(tmp_path: Path) -> None:
    write_prisma(tmp_path, {FIRST: INIT})
    (tmp_path / PRISMA / "fix_orders.sql").write_text('ALTER TABLE "User" ADD "name" TEXT;\n')

    [loose] = examine.shown(examine.examine(settings_for(tmp_path), None))

    assert (loose.rule, loose.severity) == ("prisma-loose-sql", "error")
    assert loose.message.endswith(
        'It holds 1 statement(s): ALTER TABLE "User". To run it, give it a migration folder of'
        " its own, named after the last migration's timestamp")


def test_objects_created_again_are_errors_unless_guarded_or_dropped_first(
        tmp_path: Path) -> None:
    write_prisma(tmp_path, {
        FIRST: INIT,
        "20251102000000_again": 'CREATE TYPE "Role" AS ENUM (\'A\');\n'
                                'CREATE UNIQUE INDEX "User_email_key" ON "User"("email");\n'
                                'CREATE TABLE IF NOT EXISTS "User" ("id" int);\n',
        "20251103000000_recreate": 'DROP TABLE "User";\nCREATE TABLE "User" ("id" int);\n'
                                   'ALTER TYPE "Role" RENAME TO "Kind";\n'
                                   'CREATE TYPE "Role" AS ENUM (\'B\');\n'})

    found = examine.shown(examine.examine(settings_for(tmp_path), None))

    again = f"{PRISMA}/20251102000000_again/migration.sql"
    assert seen(found) == [(again, 1, "created-twice", "error"),
                           (again, 2, "created-twice", "error")]
    assert found[0].message.startswith('CREATE TYPE "Role" fails the first time it runs')
    assert found[1].message.startswith('CREATE INDEX "User_email_key" fails')


def test_an_applied_history_that_created_a_table_twice_is_not_reported(tmp_path: Path) -> None:
    write_prisma(tmp_path, {FIRST: INIT, SECOND: 'CREATE TABLE "User" ("id" int);\n'})
    state = examine.migrations.ToolState("prisma", "_prisma_migrations", (FIRST, SECOND), (),
                                         ())
    assert examine.examine(settings_for(tmp_path), state) == []


def test_folders_whose_timestamps_do_not_order_them_are_warnings(tmp_path: Path) -> None:
    write_prisma(tmp_path, {
        "20251122000000_a": "SELECT 1;\n", "20251122_b": "SELECT 1;\n",
        "20251123000000_c": "SELECT 1;\n", "20251123000000_d": "SELECT 1;\n",
        "20251124000000_e": "SELECT 1;\n"})

    found = examine.shown(examine.examine(settings_for(tmp_path), None))

    assert [(f.file.parent.name, f.rule, f.severity) for f in found] == [
        ("20251122_b", "migration-order", "warning"),
        ("20251123000000_d", "migration-order", "warning")]
    assert found[0].message == ("20251122_b shares its timestamp with 20251122000000_a: Prisma"
                                " runs them in name order (20251122000000_a first)")


def test_findings_that_cannot_matter_are_counted_not_shown(tmp_path: Path) -> None:
    write_prisma(tmp_path, {
        FIRST: INIT,
        "20251102000000_index": 'CREATE INDEX "User_role_idx" ON "User"("role");\n'})

    found = examine.examine(settings_for(tmp_path, squawk=True), None)

    concurrent = [(f.file.parent.name, f.line, f.moot) for f in found
                  if f.rule == "squawk:require-concurrent-index-creation"]
    # The index on "User" in the file that creates it blocks nobody; the later one does.
    assert concurrent == [(FIRST, 13, True), ("20251102000000_index", 1, False)]
    assert all(f.moot for f in found if f.rule in ("missing-if-not-exists",
                                                   "squawk:prefer-robust-stmts"))
    hidden = sum(f.moot for f in found)
    assert examine.summary(found).endswith(
        f"({hidden} that cannot matter not shown: `window lint --all`)")
    assert "cannot matter" not in examine.summary(found, everything=True)


def test_a_foreign_key_on_a_new_table_and_the_timeouts_the_window_sets_cannot_matter(
        tmp_path: Path) -> None:
    write_prisma(tmp_path, {
        FIRST: INIT,
        SECOND: 'CREATE TABLE "Order" ("id" SERIAL NOT NULL, "userId" INTEGER NOT NULL,\n'
                '    CONSTRAINT "Order_pkey" PRIMARY KEY ("id"));\n'
                'ALTER TABLE "Order" ADD CONSTRAINT "Order_userId_fkey" FOREIGN KEY ("userId")'
                ' REFERENCES "User"("id");\n',
        "20251123000000_best_order":
            'ALTER TABLE "User" ADD CONSTRAINT "User_id_fkey" FOREIGN KEY ("id")'
            ' REFERENCES "Order"("id");\n'})

    found = examine.examine(settings_for(tmp_path, squawk=True), None)

    foreign = {(f.file.parent.name, f.rule, f.moot) for f in found
               if f.rule in ("squawk:adding-foreign-key-constraint",
                             "squawk:constraint-missing-not-valid")}
    # "Order" is new and empty in the file that adds its key: nothing to scan, nobody to
    # block. "User" holds rows and serves the application.
    assert foreign == {(SECOND, "squawk:adding-foreign-key-constraint", True),
                       (SECOND, "squawk:constraint-missing-not-valid", True),
                       ("20251123000000_best_order", "squawk:adding-foreign-key-constraint",
                        False),
                       ("20251123000000_best_order", "squawk:constraint-missing-not-valid",
                        False)}
    timeouts = [f for f in found if f.rule in ("squawk:require-lock-timeout",
                                               "squawk:require-statement-timeout")]
    # The window sets both on the migration's sessions, where Prisma reads them.
    assert timeouts and all(f.moot for f in timeouts)


def test_a_table_that_may_hold_rows_keeps_squawks_advice(tmp_path: Path) -> None:
    """Only a table the file creates, still empty, needs no CONCURRENTLY or NOT VALID: one
    created IF NOT EXISTS may be there with rows, and one the file fills holds them."""
    write_prisma(tmp_path, {FIRST: INIT, SECOND: (
        'CREATE TABLE IF NOT EXISTS "Order" ("id" INTEGER NOT NULL, "userId" INTEGER);\n'
        'CREATE INDEX "Order_userId_idx" ON "Order"("userId");\n'
        'CREATE TABLE "Archive" ("id" INTEGER NOT NULL, "userId" INTEGER);\n'
        'INSERT INTO "Archive" SELECT "id", "id" FROM "User";\n'
        'CREATE INDEX "Archive_userId_idx" ON "Archive"("userId");\n')})

    found = examine.examine(settings_for(tmp_path, squawk=True), None)

    assert sorted((f.line, f.moot) for f in found
                  if f.rule == "squawk:require-concurrent-index-creation"
                  and f.file.parent.name == SECOND) == [(2, False), (5, False)]
