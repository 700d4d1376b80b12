"""The migration clinic against a real ``_prisma_migrations``: an applied migration whose file
changed afterwards is caught by ``window lint``; applied files are otherwise left alone, and
a database that cannot be reached leaves every file linted as pending."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import psycopg

from orchestrator.commands import demo
from tests.support.prisma import PRISMA_TABLE, applied_row
from tests.support.shop import Shop

INIT = "20261101000000_init"
COUPONS = "20261102000000_coupons"
RERUNNABLE_COUPONS = "CREATE TABLE IF NOT EXISTS coupons (code text PRIMARY KEY);\n"


def prisma_files(shop: Shop, migrations: dict[str, str]) -> dict[str, Path]:
    """Prisma's layout in the shop's checkout, the window configured to read its table
    (squawk off: these tests are about the table, not squawk's opinions)."""
    paths = {}
    for name, sql in migrations.items():
        path = shop.folder / "prisma" / "migrations" / name / "migration.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
        paths[name] = path
    config = shop.configure(migrate_extra='tool = "prisma"\nfiles = "prisma/migrations"')
    with config.open("a") as toml:
        toml.write("\n[lint]\nsquawk = false\n")
    return paths


def applied_on_production(shop: Shop, name: str, checksum: str) -> None:
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute(PRISMA_TABLE)
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name,"
                     " applied_steps_count) VALUES (gen_random_uuid(), %s, now(), %s, 1)",
                     (checksum, name))


def test_an_applied_migration_edited_afterwards_stops_the_window(shop: Shop) -> None:
    paths = prisma_files(shop, {INIT: demo.GOOD_MIGRATION})
    applied_on_production(shop, INIT, hashlib.sha256(paths[INIT].read_bytes()).hexdigest())

    unchanged = shop.window("lint")
    assert (unchanged.returncode, unchanged.stdout) == (0, "no errors, no warnings\n"), \
        unchanged.stderr
    assert "linting 0 pending of 1 migration(s)" in unchanged.stderr

    paths[INIT].write_text(demo.GOOD_MIGRATION + "ALTER TABLE orders DROP COLUMN customer;\n")
    changed = shop.window("lint")

    assert changed.returncode == 3, changed.stderr
    now = hashlib.sha256(paths[INIT].read_bytes()).hexdigest()
    recorded = hashlib.sha256(demo.GOOD_MIGRATION.encode()).hexdigest()
    assert changed.stdout.splitlines() == [
        f"prisma/migrations/{INIT}/migration.sql:1: error: prisma-checksum-changed: {INIT} changed"
        f" after it was applied (sha256 {now[:12]}, _prisma_migrations.checksum"
        f" {recorded[:12]}): restore the applied file and put the change in a new migration",
        "1 error, 0 warnings in 1 file"]
    assert "Traceback" not in changed.stderr


def test_only_pending_migrations_are_linted_while_the_history_is_replayed(shop: Shop) -> None:
    """The applied migration's ADD COLUMN lacks IF NOT EXISTS: not reported, it ran. The
    pending one creates a table the applied one used: reported, a fresh database would
    fail on the history."""
    applied_sql = "ALTER TABLE coupons ADD COLUMN note text;\n"
    paths = prisma_files(shop, {INIT: applied_sql, COUPONS: RERUNNABLE_COUPONS})
    applied_on_production(shop, INIT, hashlib.sha256(applied_sql.encode()).hexdigest())

    done = shop.window("lint")

    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [
        f"prisma/migrations/{INIT}/migration.sql:1: error: table-used-before-created: ALTER TABLE"
        f" uses coupons before {COUPONS} (line 1) creates it",
        "1 error, 0 warnings in 1 file"]
    assert "linting 1 pending of 2 migration(s)" in done.stderr
    assert paths[COUPONS].read_text() == RERUNNABLE_COUPONS


def test_an_unreachable_database_leaves_every_file_pending(shop: Shop) -> None:
    prisma_files(shop, {INIT: "ALTER TABLE orders ADD COLUMN note text;\n"})
    shop.env["DATABASE_URL"] = f"postgresql://nobody:secret@127.0.0.1:{_closed_port()}/shop"
    toml = shop.folder / "window.toml"
    text = toml.read_text()
    bounded = text.replace('url_env = "DATABASE_URL"\n',
                           'url_env = "DATABASE_URL"\nconnect_timeout = "1s"\n', 1)
    assert bounded != text
    toml.write_text(bounded)

    done = shop.window("lint")

    assert done.returncode == 0, done.stderr
    assert "cannot read the migration tool's table" in done.stderr
    assert "every migration file is linted as pending" in done.stderr
    assert "secret" not in done.stderr + done.stdout
    assert done.stdout.splitlines() == [
        "no errors, no warnings (1 that cannot matter not shown: `window lint --all`)"]
    everything = shop.window("lint", "--all")
    assert everything.stdout.splitlines() == [
        f"prisma/migrations/{INIT}/migration.sql:1: warning: missing-if-not-exists: ADD COLUMN"
        " note to orders without IF NOT EXISTS fails when the migration is run again",
        "0 errors, 1 warning in 1 file"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_window_run_refuses_on_a_clinic_error_and_journals_its_warnings(shop: Shop) -> None:
    pasted = "Prisma schema loaded from prisma/schema.prisma\n" + RERUNNABLE_COUPONS
    prisma_files(shop, {INIT: pasted})

    refused = shop.run_window()

    assert refused.returncode == 3, refused.stderr
    assert f"prisma/migrations/{INIT}/migration.sql:1: error: prisma-cli-output:" in refused.stdout
    assert "migration clinic found 1 error" in refused.stderr
    assert shop.banner_log() == [] and shop.window("status").returncode == 2

    # Only a warning (a down.sql Prisma never runs): shown, journaled, and the window goes on.
    paths = prisma_files(shop, {INIT: "CREATE TABLE coupons (code text PRIMARY KEY);\n"})
    paths[INIT].with_name("down.sql").write_text("DROP TABLE coupons;\n")
    shop.configure(migrate=(  # applies it and records it, as prisma migrate deploy would
        f'psql -X -q -v ON_ERROR_STOP=1 -f prisma/migrations/{INIT}/migration.sql'
        f' "$DATABASE_URL" && psql -X -q -c \'{PRISMA_TABLE}\' "$DATABASE_URL" && psql -X -q'
        f' -c "{applied_row(INIT)}" "$DATABASE_URL"'),
        migrate_extra='tool = "prisma"\nfiles = "prisma/migrations"')
    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    assert "down.sql:1: warning: prisma-unused-sql: Prisma never runs this file" in done.stdout
    assert any("prisma-unused-sql" in w for w in shop.status()["lint"])


def test_a_pending_create_role_stops_the_window_until_the_config_allows_it(shop: Shop) -> None:
    """A role outlives the rollback's restore: ``window lint`` refuses (exit 3) a pending
    CREATE ROLE, leaves the applied one alone (it ran), and lets it through as a warning
    once ``[lint] warnings`` names the rule."""
    applied_sql = "CREATE ROLE clinic_reader;\n"
    pending_sql = RERUNNABLE_COUPONS + "CREATE ROLE clinic_writer LOGIN PASSWORD 'hunter2';\n"
    paths = prisma_files(shop, {INIT: applied_sql, COUPONS: pending_sql})
    applied_on_production(shop, INIT, hashlib.sha256(applied_sql.encode()).hexdigest())
    finding = (f"prisma/migrations/{COUPONS}/migration.sql:2: error: cluster-level: CREATE ROLE"
               " clinic_writer changes the cluster, not the database: a rollback will NOT undo"
               " it")

    refused = shop.window("lint")

    assert refused.returncode == 3, refused.stderr
    lines = refused.stdout.splitlines()
    assert [line[:len(finding)] for line in lines[:-1]] == [finding]
    assert lines[-1] == "1 error, 0 warnings in 1 file"
    assert "hunter2" not in refused.stdout + refused.stderr

    with (shop.folder / "window.toml").open("a") as toml:  # [lint] is the last table
        toml.write('warnings = ["cluster-level"]\n')
    allowed = shop.window("lint")

    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[0].startswith(finding.replace("error:", "warning:"))
    assert allowed.stdout.splitlines()[-1] == "0 errors, 1 warning in 1 file"
    assert paths[COUPONS].read_text() == pending_sql


def test_plan_refuses_on_a_clinic_error_as_run_does_and_counts_the_warnings(
        shop: Shop) -> None:
    prisma_files(shop, {INIT: "Prisma schema loaded from prisma/schema.prisma\n"
                              + RERUNNABLE_COUPONS})

    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stdout + plan.stderr
    assert f"prisma/migrations/{INIT}/migration.sql:1: error: prisma-cli-output:" in plan.stdout
    assert "the migration clinic found 1 error, 0 warnings in 1 file: `run` refuses" \
        in plan.stderr

    paths = prisma_files(shop, {INIT: RERUNNABLE_COUPONS})
    paths[INIT].with_name("down.sql").write_text("DROP TABLE coupons;\n")
    clean = shop.window("plan")

    assert clean.returncode == 0, clean.stderr
    assert "  clinic      0 errors, 1 warning in 1 file; `window lint` lists them" \
        in clean.stdout.splitlines()


def test_a_plain_sql_folder_is_linted_before_the_phrase_psql_commands_and_all(
        shop: Shop) -> None:
    """``tool = "none"`` with ``files``: the clinic runs before every window as it does for
    Prisma (every file counts as pending: no table says otherwise); psql's own commands in
    the files are psql's, not SQL errors."""
    folder = shop.folder / "sql"
    folder.mkdir()
    (folder / "001_coupons.sql").write_text(
        "\\set ON_ERROR_STOP on\n" + RERUNNABLE_COUPONS.replace(" IF NOT EXISTS", ""))
    (folder / "002_coupons_again.sql").write_text("CREATE TABLE coupons (code text);\n")
    shop.configure(migrate_extra='files = "sql"')
    with (shop.folder / "window.toml").open("a") as toml:
        toml.write("\n[lint]\nsquawk = false\n")

    refused = shop.window("run")  # no --confirm: the clinic refuses before the phrase

    assert refused.returncode == 3, refused.stdout + refused.stderr
    errors = [line for line in refused.stdout.splitlines() if ": error: " in line]
    assert errors == [
        "sql/002_coupons_again.sql:1: error: created-twice: CREATE TABLE coupons fails the"
        " first time it runs: 001_coupons.sql (line 2) already creates it (drop this"
        " statement, or add IF NOT EXISTS)"]
    assert "Type" not in refused.stdout and "migration clinic found 1 error" in refused.stderr
    assert shop.banner_log() == [] and shop.window("status").returncode == 2

    (folder / "002_coupons_again.sql").write_text("ALTER TABLE coupons ADD note text;\n")
    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in "\n".join(shop.status()["lint"])
