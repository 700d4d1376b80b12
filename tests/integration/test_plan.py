"""``window plan`` is the honest preview of ``run``: it connects (read-only) and refuses with
run's own exit code wherever run would refuse, and says what is pending where and how a
rollback would go."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.commands import demo
from tests.support.prisma import MIGRATION, PRISMA_TABLE, prisma_project
from tests.support.shop import Shop

OLD_PG_DUMP = '#!/bin/sh\necho "{name} (PostgreSQL) 9.6.24"\n'


def server_major(shop: Shop) -> int:
    return int(shop.cluster.psql("SHOW server_version_num")) // 10000


def test_plan_and_run_refuse_outside_a_git_checkout_alike(shop: Shop) -> None:
    shop.configure()
    shutil.rmtree(shop.folder / ".git")

    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stderr + run.stderr
    assert "not inside a git repository" in plan.stderr


def test_plan_and_run_refuse_client_programs_older_than_the_server(shop: Shop,
                                                                  tmp_path: Path) -> None:
    shop.configure()
    old = tmp_path / "old-bin"
    old.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (old / name).write_text(OLD_PG_DUMP.format(name=name))
        (old / name).chmod(0o755)
    shop.env["WINDOW_PG_BINDIR"] = str(old)
    shop.env["PATH"] = f"{old}:{shop.env['PATH']}"

    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stderr + run.stdout + run.stderr
    major = server_major(shop)
    assert f"pg_dump {major} or newer was not found" in plan.stderr
    assert "is 9" in plan.stderr and f"install postgresql-client-{major}" in plan.stderr
    assert shop.banner_log() == [] and not shop.has_column("orders", "status")


def test_plan_says_what_is_pending_where_and_how_a_rollback_would_go(shop: Shop) -> None:
    prisma_project(shop)

    plan = shop.window("plan")

    assert plan.returncode == 0, plan.stderr
    assert f"pending     on production: {MIGRATION} (1)" in plan.stdout
    assert "on staging: the same history as production" in plan.stdout
    assert "rollback    swap in the standby proven at the backup" in plan.stdout
    assert f"role {demo.APP_USER} may take it" in plan.stdout
    assert f"server      PostgreSQL {server_major(shop)} on production; pg_dump " in plan.stdout
    assert demo.APP_PASSWORD not in plan.stdout + plan.stderr


def test_plan_says_when_nothing_can_tell_what_is_pending(shop: Shop) -> None:
    shop.configure()

    plan = shop.window("plan")

    assert plan.returncode == 0, plan.stderr
    assert 'pending     unknown: with [migrate] tool = "none"' in plan.stdout


def test_plan_refuses_as_run_does_on_the_tools_table_it_may_not_read_or_that_failed(
        shop: Shop) -> None:
    """No traceback for a table this role may not read, and a failed migration recorded on
    production refuses plan as it refuses run (exit 3, one sentence each)."""
    prisma_project(shop)
    shop.cluster.psql(f"{PRISMA_TABLE}; ALTER TABLE _prisma_migrations OWNER TO postgres;"
                      f" REVOKE ALL ON _prisma_migrations FROM PUBLIC, {demo.APP_USER}",
                      shop.prod_db)

    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stdout + plan.stderr
    said = "cannot read the migration tool's table on production"
    assert said in plan.stderr and said in run.stderr and "Traceback" not in plan.stderr
    assert "permission denied for table _prisma_migrations" in plan.stderr

    shop.cluster.psql(f"GRANT ALL ON _prisma_migrations TO {demo.APP_USER};"
                      " INSERT INTO _prisma_migrations (id, checksum, migration_name, logs)"
                      f" VALUES ('x', 'y', '{MIGRATION}', 'P3018 boom')", shop.prod_db)
    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stdout + plan.stderr
    said = f"production's _prisma_migrations records a failed migration: {MIGRATION} failed"
    assert said in plan.stderr and said in run.stderr
