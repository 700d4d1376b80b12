"""The migration tool's own table, read with psycopg: failed migrations named with the command
that resolves them, nothing pending stops the window, Alembic's and Flyway's tables too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.commands import demo
from orchestrator.config import MigrateSection
from orchestrator.errors import ConfigError
from orchestrator.postgres import migrations
from orchestrator.postgres.pg import Db
from tests.support.prisma import PRISMA_TABLE, applied_row
from tests.support.shop import Shop

FAILED = "20261130120000_add_coupons"
FAILED_LOGS = "Migration failed: ERROR: relation coupons already exists"


def failed_row(name: str = FAILED) -> str:
    return ("INSERT INTO _prisma_migrations (id, checksum, migration_name, logs) VALUES"
            f" (gen_random_uuid(), 'c', '{name}', '{FAILED_LOGS}')")


def prisma_project(shop: Shop, names: list[str], migrate: str | None = None) -> None:
    """Prisma's layout: one folder per migration holding migration.sql."""
    for name in names:
        folder = shop.folder / "prisma" / "migrations" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "migration.sql").write_text(demo.GOOD_MIGRATION)
    shop.configure(migrate=migrate or 'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql'
                   ' "$DATABASE_URL"',
                   migrate_extra='tool = "prisma"\nfiles = "prisma/migrations"')


def on_both(shop: Shop, sql: str) -> None:
    for url in (shop.prod_url, shop.staging_url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)


def test_a_failed_migration_on_production_refuses_the_window_with_the_resolve_command(
        shop: Shop) -> None:
    prisma_project(shop, ["20261101000000_init", FAILED])
    on_both(shop, PRISMA_TABLE + ";" + applied_row("20261101000000_init"))
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute(failed_row())

    done = shop.run_window()

    assert done.returncode == 3, done.stderr
    assert FAILED in done.stderr
    assert f"prisma migrate resolve --rolled-back {FAILED}" in done.stderr
    assert "already exists" in done.stderr  # its logs, shown
    assert "Traceback" not in done.stderr
    assert shop.banner_log() == []  # nothing ran
    assert shop.window("status").returncode == 2  # no window was even started


def test_a_failed_row_left_by_the_migration_fails_the_post_check_by_name(shop: Shop) -> None:
    """The command exits 0, yet the tool's table says a migration failed: the built-in check
    names it and says how to resolve it; production is rolled back."""
    prisma_project(shop, [FAILED], migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
        f'psql -X -q -c \'{PRISMA_TABLE}\' "$DATABASE_URL" && '
        'if [ "$WINDOW_PHASE" = migrate ]; then '
        f'psql -X -q -c "{failed_row()}" "$DATABASE_URL"; else '
        f'psql -X -q -c "{applied_row(FAILED)}" "$DATABASE_URL"; fi'))
    before = shop.fingerprint()

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    error = shop.phase("post_check")["error"]
    assert "migration-tool-state" in error
    assert FAILED in error and f"prisma migrate resolve --rolled-back {FAILED}" in error
    assert shop.fingerprint() == before  # rolled back: the table is gone again


def test_a_failing_migrate_command_is_explained_by_the_tool_table(shop: Shop) -> None:
    prisma_project(shop, [FAILED], migrate=(
        f'psql -X -q -c \'{PRISMA_TABLE}\' "$DATABASE_URL" && '
        'if [ "$WINDOW_PHASE" = migrate ]; then '
        f'psql -X -q -c "{failed_row()}" "$DATABASE_URL"; exit 1; fi; '
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
        f'psql -X -q -c "{applied_row(FAILED)}" "$DATABASE_URL"'))

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    error = shop.phase("migrate")["error"]
    assert "exited 1" in error and FAILED in error and "migrate resolve" in error


def test_nothing_pending_stops_with_exit_0_unless_forced(shop: Shop) -> None:
    names = ["20261101000000_init", "20261102000000_status"]
    prisma_project(shop, names)
    on_both(shop, PRISMA_TABLE + ";" + ";".join(applied_row(n) for n in names))

    done = shop.run_window()

    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout and "--force" in done.stdout
    assert shop.banner_log() == []
    assert shop.window("status").returncode == 2  # no window was started

    forced = shop.run_window("--force")
    assert forced.returncode == 0, forced.stderr
    assert shop.status()["state"] == "completed"


def test_pending_migrations_are_named_at_the_prompt(shop: Shop) -> None:
    prisma_project(shop, ["20261101000000_init", "20261102000000_status"])
    on_both(shop, PRISMA_TABLE + ";" + applied_row("20261101000000_init"))

    done = shop.window("run", input="not the phrase\n")

    assert done.returncode == 3
    assert "pending: 20261102000000_status" in done.stderr


def test_an_unfinished_window_is_named_before_the_tool_is_asked(shop: Shop) -> None:
    """A window that died after its migration: the table says nothing is pending, yet the
    banner may be up and the checks never ran. `run` must point at resume, not exit 0."""
    names = ["20261101000000_init"]
    prisma_project(shop, names, migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
        'if [ "$WINDOW_PHASE" = migrate ]; then sleep 60 & echo $! > sleeper.pid; wait; fi'))
    on_both(shop, PRISMA_TABLE + ";" + applied_row(names[0]))
    window = shop.start("run", "--confirm", demo.PHRASE, "--force")
    shop.wait_for("sleeper.pid")
    window.kill()  # as kill -9: no chance to tidy up
    window.wait(timeout=30)

    done = shop.run_window()

    assert done.returncode == 3, done.stderr
    assert "unfinished" in done.stderr and "window resume" in done.stderr
    assert shop.window("abort", "--confirm", demo.PHRASE).returncode == 0


def test_a_revision_no_file_defines_refuses_the_window(shop: Shop) -> None:
    versions = shop.folder / "alembic" / "versions"
    versions.mkdir(parents=True)
    (versions / "a1_init.py").write_text('revision = "a1"\ndown_revision = None\n')
    shop.configure(migrate_extra='tool = "alembic"\nfiles = "alembic/versions"')
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
                     " INSERT INTO alembic_version VALUES ('zz9')")

    done = shop.run_window()

    assert done.returncode == 3, done.stderr
    assert "zz9" in done.stderr and "wrong folder or branch" in done.stderr
    assert shop.banner_log() == []


def test_a_missing_migrations_folder_is_a_config_error(shop: Shop) -> None:
    shop.configure(migrate_extra='tool = "prisma"\nfiles = "prisma/nowhere"')

    done = shop.run_window()

    assert done.returncode == 2
    assert "prisma/nowhere" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def conn(shop: Shop) -> Any:
    with psycopg.connect(shop.prod_url, autocommit=True) as connection:
        yield connection


def test_alembic_revisions_follow_the_chain_from_the_recorded_head(
        conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for rev, down in (("a1", None), ("b2", "a1"), ("c3", "b2")):
        (versions / f"{rev}_step.py").write_text(
            f'"""{rev}"""\nrevision: str = "{rev}"\ndown_revision = {down!r}\n'
            "def upgrade() -> None:\n    pass\n")
    settings = MigrateSection(command="alembic upgrade head", tool="alembic")

    assert migrations.read(conn, settings, versions).pending == ("a1", "b2", "c3")  # no table

    conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    conn.execute("INSERT INTO alembic_version VALUES ('b2')")
    state = migrations.read(conn, settings, versions)
    assert state.pending == ("c3",) and state.unknown == ()

    conn.execute("UPDATE alembic_version SET version_num = 'c3'")
    assert migrations.read(conn, settings, versions).pending == ()

    conn.execute("UPDATE alembic_version SET version_num = 'zz'")
    state = migrations.read(conn, settings, versions)
    assert state.unknown == ("zz",)
    assert state.pending is None  # every revision "pending" would be meaningless: wrong folder
    assert "zz" in state.problems()[-1]


FLYWAY = MigrateSection(command="flyway migrate", tool="flyway")


def flyway_history(conn: psycopg.Connection[Any],
                   *rows: tuple[int, str | None, str, str, int | None, bool]) -> None:
    """Flyway's table, as `flyway migrate` creates it on PostgreSQL, holding these rows
    (installed_rank, version, description, type, checksum, success)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS flyway_schema_history (installed_rank int PRIMARY KEY,"
        " version varchar(50), description varchar(200) NOT NULL, type varchar(20) NOT NULL,"
        " script varchar(1000) NOT NULL, checksum int, installed_by varchar(100) NOT NULL,"
        " installed_on timestamp NOT NULL DEFAULT now(), execution_time int NOT NULL,"
        " success boolean NOT NULL)")
    for rank, version, description, kind, checksum, success in rows:
        script = f"{'V' + version if version else 'R'}__{description}.sql"
        conn.execute("INSERT INTO flyway_schema_history VALUES (%s, %s, %s, %s, %s, %s, 'me',"
                     " now(), 5, %s)", (rank, version, description, kind, script, checksum,
                                        success))


def test_flyway_failed_rows_and_pending_versions(conn: psycopg.Connection[Any],
                                                 tmp_path: Path) -> None:
    for name in ("V1__init.sql", "V1_1__orders.sql", "V2__coupons.sql", "R__views.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    flyway_history(conn, (1, "1", "init", "SQL", 1, True), (2, "1.1", "orders", "SQL", 1, True),
                   (3, "2", "coupons", "SQL", 1, False))

    state = migrations.read(conn, FLYWAY, tmp_path)

    assert state.pending == ("V2__coupons.sql", "R__views.sql")  # never run: pending, last
    assert [f.name for f in state.failed] == ["V2__coupons"]
    assert "flyway repair" in state.problems()[0]


def test_flyway_repeatables_are_pending_when_their_latest_run_had_another_checksum(
        conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    scripts = {"V1__init.sql": "SELECT 1;", "V2__coupons.sql": "SELECT 2;",
               "R__views.sql": "CREATE VIEW v AS SELECT 1;\n",
               "R__grants.sql": "GRANT SELECT ON v TO app;\n",
               "R__price_index.sql": "SELECT 3;"}
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    now = {name: migrations.flyway_checksum(text) for name, text in scripts.items()}
    flyway_history(
        conn, (1, "1", "init", "SQL", now["V1__init.sql"], True),
        (2, None, "views", "SQL", 12345, True),  # an older views.sql ...
        (3, None, "views", "SQL", now["R__views.sql"], True),  # ... then this one: up to date
        (4, None, "grants", "SQL", now["R__grants.sql"], True),  # this grants.sql ran ...
        (5, None, "grants", "SQL", 6789, True),  # ... but another one ran after it: pending
        (6, None, "price index", "SQL", now["R__price_index.sql"], True))  # "_" is a space

    state = migrations.read(conn, FLYWAY, tmp_path)

    assert state.pending == ("V2__coupons.sql", "R__grants.sql")  # versioned first

    (tmp_path / "R__views.sql").write_text("CREATE VIEW v AS SELECT 1;\r\n")  # CRLF: same sum
    (tmp_path / "R__price_index.sql").write_text("SELECT 4;")
    assert migrations.read(conn, FLYWAY, tmp_path).pending == (
        "V2__coupons.sql", "R__grants.sql", "R__price_index.sql")


def test_flyway_undo_takes_a_version_back_out_until_it_runs_again(
        conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    for name in ("V1__init.sql", "V2__coupons.sql", "U2__coupons.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    flyway_history(conn, (1, "1", "init", "SQL", 1, True), (2, "2", "coupons", "SQL", 1, True),
                   (3, "2", "coupons", "UNDO_SQL", 1, True))

    state = migrations.read(conn, FLYWAY, tmp_path)
    assert state.pending == ("V2__coupons.sql",) and state.applied == ("1",)

    flyway_history(conn, (4, "2", "coupons", "SQL", 1, True))
    assert migrations.read(conn, FLYWAY, tmp_path).pending == ()

    flyway_history(conn, (5, "2", "coupons", "UNDO_SQL", 1, False))  # a failed undo undoes nothing
    state = migrations.read(conn, FLYWAY, tmp_path)
    assert state.pending == () and [f.name for f in state.failed] == ["V2__coupons"]


def test_a_flyway_row_with_a_version_flyway_cannot_read_is_a_config_error(
        conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    (tmp_path / "V1__init.sql").write_text("SELECT 1;")
    flyway_history(conn, (1, "1", "init", "SQL", 1, True), (7, "1.x", "odd", "SQL", 1, True))

    with pytest.raises(ConfigError) as raised:
        migrations.read(conn, FLYWAY, tmp_path)

    assert raised.value.message == (
        "flyway_schema_history: the row with installed_rank 7 has a version Flyway cannot read:"
        " '1.x' is not a Flyway version (numbers separated by . or _).")


def test_a_prisma_url_with_its_own_parameters_reaches_the_table_in_its_schema(
        conn: psycopg.Connection[Any], shop: Shop) -> None:
    conn.execute("CREATE SCHEMA app")
    conn.execute(PRISMA_TABLE.replace('"_prisma_migrations"', 'app."_prisma_migrations"'))
    conn.execute(failed_row().replace("_prisma_migrations", "app._prisma_migrations"))
    db = Db.from_url(shop.prod_url + "?schema=app&connection_limit=5")

    with psycopg.connect(db.conninfo(), autocommit=True) as prisma_conn:
        state = migrations.read(prisma_conn, MigrateSection(command="x", tool="prisma"), None,
                                db.schema)

    assert [f.name for f in state.failed] == [FAILED]


@pytest.mark.parametrize("schema", ["TenantA", "my-app"])
def test_a_prisma_schema_is_matched_as_written_not_case_folded(
        conn: psycopg.Connection[Any], schema: str) -> None:
    """Prisma quotes ?schema=TenantA: its table is in "TenantA", not in tenanta (which holds
    a decoy here, as another tenant's would)."""
    table = f'"{schema}"._prisma_migrations'
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(PRISMA_TABLE.replace('"_prisma_migrations"', table))
    conn.execute(failed_row().replace("_prisma_migrations", table))
    conn.execute("CREATE SCHEMA tenanta")  # where a case-folding lookup would look
    conn.execute(PRISMA_TABLE.replace('"_prisma_migrations"', "tenanta._prisma_migrations"))

    state = migrations.read(conn, MigrateSection(command="x", tool="prisma"), None, schema)

    assert [f.name for f in state.failed] == [FAILED]


@pytest.mark.parametrize(("files", "message"), [
    ({"alembic/versions/abc_step.py": 'revision = "abc"\ndown_revision = None\ndef up(:\n'},
     "[migrate] files: alembic/versions/abc_step.py cannot be read: invalid syntax (line 3)."),
    ({"alembic/versions/__init__.py": ""},
     "[migrate] files: alembic/versions holds no Alembic revision"),
])
def test_a_broken_or_empty_migrations_folder_refuses_the_window_without_a_traceback(
        shop: Shop, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (shop.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (shop.folder / name).write_text(text)
    shop.configure(migrate_extra='tool = "alembic"\nfiles = "alembic/versions"')

    done = shop.run_window()

    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert shop.banner_log() == []
