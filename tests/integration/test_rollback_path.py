"""The rollback path is proven before production changes: a role that could not roll back is
refused by preflight and by plan (exit 3) before the rehearsal touches staging, told what it
lacks and the statement that grants it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import demo
from tests.support.sessions import idle_session
from tests.support.shop import Shop, failing_migration

LEAN, LEAN_PASSWORD = "lean_deploy", "l3an-pw"
OWNER = "owning_deploy"  # owns its production, and only that


def as_lean_role(shop: Shop, *privileges: str) -> None:
    """Production reached as a role holding the owner's privileges (it is a member of the
    shop's owner) and ``privileges``, without CREATEDB unless given."""
    shop.cluster.psql(f"DROP ROLE IF EXISTS {LEAN}; CREATE ROLE {LEAN} LOGIN PASSWORD"
                      f" '{LEAN_PASSWORD}' {' '.join(privileges)}; GRANT {demo.APP_USER}"
                      f" TO {LEAN}")
    shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db, user=LEAN, password=LEAN_PASSWORD)


def test_a_role_without_createdb_is_refused_before_production_or_staging_changes(
        shop: Shop) -> None:
    shop.configure(demo.GOOD_MIGRATION, timeouts="")
    with_list = (shop.config.read_text()
                 .replace("jobs = 2\n", 'jobs = 2\nverify = "list"\n', 1))
    shop.config.write_text(with_list)  # verify = "list" defers the restore to the rollback
    as_lean_role(shop)

    plan, run = shop.window("plan"), shop.run_window()

    said = plan.stdout + plan.stderr + run.stdout + run.stderr
    assert plan.returncode == run.returncode == 3, said
    assert "Traceback" not in said and LEAN_PASSWORD not in said
    for done in (plan.stderr, shop.phase("preflight")["error"]):
        assert f"no rollback would be possible for role {LEAN}: it lacks CREATEDB" in done
        assert f'ALTER ROLE "{LEAN}" CREATEDB;' in done
    assert shop.status()["state"] == "aborted"
    assert shop.phase("staging_dry_run")["status"] == "skipped", "staging was never touched"
    assert not shop.has_column("orders", "status", shop.staging_url)
    assert shop.banner_log() == [] and not shop.has_column("orders", "status")


def test_objects_of_a_role_it_cannot_become_and_sessions_it_cannot_end_are_refused(
        shop: Shop) -> None:
    """Production owned by the deploy role (CREATEDB, nothing else), holding a table of a
    role it is no member of, which is connected."""
    other, production = "ledger_owner", f"{shop.prod_db}_own"
    shop.cluster.psql(f"CREATE ROLE {OWNER} LOGIN CREATEDB PASSWORD '{LEAN_PASSWORD}';"
                      f" CREATE ROLE {other} LOGIN PASSWORD 'x'")
    shop.cluster.psql(f"CREATE DATABASE {production} OWNER {OWNER}")
    shop.cluster.psql(f"CREATE TABLE ledger (id int); ALTER TABLE ledger OWNER TO {other}",
                      dbname=production)
    shop.configure(demo.GOOD_MIGRATION)
    shop.env["DATABASE_URL"] = shop.cluster.url(production, user=OWNER, password=LEAN_PASSWORD)

    with idle_session(shop.cluster.url(production, user=other, password="x")):
        plan = shop.window("plan")

    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert f"membership in {other} (the restore gives {other}'s objects back to it)" \
        in plan.stderr
    assert f'GRANT "{other}" TO "{OWNER}";' in plan.stderr
    assert f"pg_signal_backend (to end the sessions of other roles that a swap must end:" \
        f" {other} (1) connected now)" in plan.stderr
    assert f'GRANT pg_signal_backend TO "{OWNER}";' in plan.stderr
    assert "CREATEDB" not in plan.stderr and "Traceback" not in plan.stderr

    shop.cluster.psql(f"GRANT {other} TO {OWNER}")  # its sessions are then the role's own
    granted = shop.window("plan")

    assert granted.returncode == 0, granted.stderr
    assert f"role {OWNER} may take it" in granted.stdout
    assert "other roles' sessions are hidden from this role" in granted.stdout


def test_in_place_rolls_back_for_a_role_that_may_not_create_databases(shop: Shop) -> None:
    failing_migration(shop, 'psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE SCHEMA'
                      ' audit; CREATE TABLE audit.trail (id int); INSERT INTO audit.trail'
                      ' VALUES (1)"')
    shop.config.write_text(shop.config.read_text().replace(
        "jobs = 2\n", 'jobs = 2\nverify = "list"\nrollback = "in_place"\n', 1))
    as_lean_role(shop)
    before = (shop.fingerprint(), shop.schema())

    plan, done = shop.window("plan"), shop.run_window()

    said = done.stdout + done.stderr
    assert plan.returncode == 0, plan.stderr
    assert "rollback    in place: production is dumped" in plan.stdout
    assert "in place    a rollback takes about" in plan.stdout
    assert done.returncode == 1, said
    assert shop.status()["state"] == "rolled_back" and "Traceback" not in said
    assert (shop.fingerprint(), shop.schema()) == before, "production is its backup again"
    rollback = shop.status()["rollback"]
    assert rollback["method"] == "in_place"
    assert "rollback in place (dumped, emptied, restored) in" in done.stdout
    kept = Path(rollback["retained_database"])
    assert kept.name.endswith(".failed") and (kept / "toc.dat").is_file(), \
        "the failed database is kept, as an archive"
    assert shop.databases(f"{shop.prod_db}_%") == [f"{shop.prod_db}_staging"], \
        "no database was created"
    assert LEAN_PASSWORD not in said
