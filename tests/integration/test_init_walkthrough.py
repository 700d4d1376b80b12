"""`window init` on a project like our first users' (the app in frontend/, Node 20 in .nvmrc,
pnpm, a Prisma history, production's URL in DATABASE_URL_PROD, no staging database), then the
workflow's own "Run the window" step, run with bash, carries a whole window out; and what a
re-run of a failed job does, from the real `window status --json` of the window before it.

`prisma migrate deploy` is the suite's stand-in (tests/support/prisma_deploy.py): it keeps
`_prisma_migrations` as Prisma does and reads only its URL.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from orchestrator.commands import demo
from tests.support import workflow_steps
from tests.support.shop import SLOW_ON_PRODUCTION, Shop, failing_migration

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT / "tests" / "fixtures" / "prisma-shop" / "prisma" / "migrations"
APPLIED = 13
DEPLOY = f"PYTHONPATH={ROOT} {sys.executable} -m tests.support.prisma_deploy prisma/migrations"
# `prisma migrate status`, as far as the check reads it: run in frontend/ (the schema is
# there), up to date when no migration is recorded as failed.
STATUS = """\
test -f prisma/schema.prisma || exit 1
failed=$(psql -X -At "$DATABASE_URL" -c \
  'SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NULL')
[ "$failed" = 0 ] && echo 'Database schema is up to date!'
"""
SEED = """
INSERT INTO "User" ("email", "fullName") SELECT 'user' || g || '@example.com', 'User ' || g
  FROM generate_series(1, 50) g;
INSERT INTO "Product" ("name", "priceCents", "sku") SELECT 'Product ' || g, 100 * g,
  CASE WHEN g % 2 = 0 THEN 'P-' || g END FROM generate_series(1, 20) g;
"""
PHRASE = "SHOP-GO"


def users_project(shop: Shop) -> dict[str, str]:
    """Their layout in the shop's folder, production at the first migrations of the
    history; the environment the workflow's job has (production's secret only)."""
    root = shop.folder
    for leftover in ("window.toml", "migration.sql"):
        (root / leftover).unlink()
    app = root / "frontend"
    shutil.copytree(HISTORY, app / "prisma" / "migrations")
    (app / "prisma" / "schema.prisma").write_text(
        'datasource db {\n  provider = "postgresql"\n  url = env("DATABASE_URL")\n}\n')
    (app / "package.json").write_text(json.dumps({
        "name": "shop", "private": True, "scripts": {"build": "next build"},
        "dependencies": {"@prisma/client": "6.1.0", "next": "15.0.3"},
        "devDependencies": {"prisma": "6.1.0"}}))
    (app / ".nvmrc").write_text("20\n")
    (app / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    (app / "public").mkdir()
    first = root.parent / "first"
    for name in sorted(p.name for p in HISTORY.iterdir() if p.is_dir())[:APPLIED]:
        shutil.copytree(HISTORY / name, first / name)
    done = subprocess.run([sys.executable, "-m", "tests.support.prisma_deploy", str(first)],
                          cwd=ROOT, env={**shop.env, "DATABASE_URL": shop.prod_url},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(shop.prod_url, autocommit=True) as conn:
        conn.execute(SEED)  # type: ignore[arg-type]
    shop.env = {**{k: v for k, v in shop.env.items() if not k.startswith("DATABASE_URL")},
                "DATABASE_URL_PROD": shop.prod_url}
    return shop.env


def filled_in(shop: Shop) -> None:
    """What the README tells a user to edit: the people to call; here also the stand-ins
    for pnpm's prisma commands (no Node on the test machine)."""
    status = shop.folder.parent / "prisma-status.sh"
    status.write_text(STATUS)
    toml = shop.folder / "window.toml"
    text = toml.read_text()
    for old, new in (("<name and phone>", "Ann 555-0100"),
                     ('"pnpm prisma migrate deploy"', json.dumps(DEPLOY)),
                     ('"pnpm prisma migrate status"', json.dumps(f"sh {status}"))):
        assert old in text, old
        text = text.replace(old, new)
    toml.write_text(text)


def recorded(url: str) -> list[tuple[str, bool]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [(name, done) for name, done in conn.execute(
            "SELECT migration_name, finished_at IS NOT NULL FROM _prisma_migrations"
            " ORDER BY migration_name")]


def run_job(shop: Shop, attempt: int, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """The workflow's "Run the window" step, as attempt ``attempt`` of the job."""
    given = {"CONFIRM": PHRASE, "ATTEMPT": str(attempt)}
    for name in workflow_steps.step(shop.folder, "Run the window")["env"]:
        if name not in given:
            given[name] = shop.env[name]
    return workflow_steps.run_step(shop.folder, "Run the window", given, base=env or shop.env)


def test_init_on_a_prisma_project_then_the_workflows_step_completes_a_window(
        shop: Shop) -> None:
    users_project(shop)
    major = shop.sql("SELECT current_setting('server_version_num')::int / 10000")

    init = shop.window("init", "--production-env", "DATABASE_URL_PROD", "--clone",
                       "--phrase", PHRASE)

    assert init.returncode == 0, init.stdout + init.stderr
    assert f"found: PostgreSQL client {major} (production's server ($DATABASE_URL_PROD)" \
        in init.stdout
    assert "found: the app lives in frontend/" in init.stdout
    assert workflow_steps.load(shop.folder)["env"]["PG_VERSION"] == str(major)
    filled_in(shop)
    plan = shop.window("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "staging     none: rehearsed on a copy of production" in plan.stdout
    pending = sorted(p.name for p in HISTORY.iterdir() if p.is_dir())[APPLIED:]
    assert all(name in plan.stdout for name in pending), plan.stdout

    done = run_job(shop, attempt=1)

    assert done.returncode == 0, done.stdout + done.stderr
    status = shop.status()
    assert status["state"] == "completed"
    assert status["rehearsal"]["mode"] == "clone"
    assert status["staging"] == "none: rehearsed on a copy of production, restored beside it"
    assert recorded(shop.prod_url) == [(p.name, True) for p in sorted(HISTORY.iterdir())
                                       if p.is_dir()]
    checked = next(p for p in status["phases"] if p["name"] == "post_check")
    assert checked["status"] == "succeeded"
    assert not (shop.folder / "frontend/public/maintenance.html").exists()
    assert "Traceback" not in done.stdout + done.stderr
    assert shop.prod_url.split("@")[0] not in done.stdout + done.stderr, "no password shown"
    # The state folder and the backup (customer data) never reach the repository.
    listed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=shop.folder, capture_output=True, text=True, check=True).stdout
    assert (shop.folder / "backups").is_dir() and (shop.folder / ".window").is_dir()
    assert "backups/" not in listed and ".window/" not in listed
    # A re-run of that job (its upload failed, say): the window ended well, so it runs
    # again, and finds nothing pending.
    again = run_job(shop, attempt=2)
    assert again.returncode == 0, again.stdout + again.stderr


def workflow_for(shop: Shop) -> None:
    """The workflow `window init` writes, in the shop that tests/support/shop.py configured."""
    scratch = shop.folder.parent / "init"
    scratch.mkdir()
    made = subprocess.run([sys.executable, "-m", "orchestrator", "init", "--phrase",
                           demo.PHRASE, "--pg-version", "17"], cwd=scratch, env=shop.env,
                          capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    shutil.copytree(scratch / ".github", shop.folder / ".github")


def rerun(shop: Shop) -> subprocess.CompletedProcess[str]:
    given = {"DATABASE_URL": shop.prod_url, "DATABASE_URL_STAGING": shop.staging_url,
             "CONFIRM": demo.PHRASE, "ATTEMPT": "2"}
    return workflow_steps.run_step(shop.folder, "Run the window", given, base=shop.env)


def test_a_rerun_after_a_rollback_says_what_to_do_and_starts_nothing(shop: Shop) -> None:
    failing_migration(shop)
    workflow_for(shop)
    first = workflow_steps.run_step(shop.folder, "Run the window", {
        "DATABASE_URL": shop.prod_url, "DATABASE_URL_STAGING": shop.staging_url,
        "CONFIRM": demo.PHRASE, "ATTEMPT": "1"}, base=shop.env)
    assert first.returncode == 1, first.stdout + first.stderr
    before = shop.status()

    again = rerun(shop)

    assert again.returncode == 1
    assert again.stdout.strip().splitlines()[-1] == (
        "::error::The last window failed and was rolled back (production holds its backup):"
        " fix the migration, then start a new run of this workflow instead of re-running this"
        " one.")
    assert shop.status()["run_id"] == before["run_id"], "no second window"
    assert not (shop.folder / "window-status.json").exists()


def test_a_rerun_after_a_refusal_says_what_to_do(shop: Shop) -> None:
    shop.configure("SELECT 1 / 0;")  # fails in the rehearsal: production never changes
    workflow_for(shop)
    assert shop.run_window().returncode == 3
    run_id = shop.status()["run_id"]

    again = rerun(shop)

    assert again.returncode == 1
    assert again.stdout.strip().splitlines()[-1].startswith(
        "::error::The last window was refused before production changed")
    assert shop.status()["run_id"] == run_id, "no second window"


def test_a_rerun_after_a_window_that_needs_attention_says_what_to_do(shop: Shop) -> None:
    shop.configure(banner_off="echo off >> banner.log; exit 1",  # the banner stays up
                   timeouts='banner_off = "3s"')
    workflow_for(shop)
    assert shop.run_window().returncode == 4
    run_id = shop.status()["run_id"]

    again = rerun(shop)

    assert again.returncode == 1
    assert again.stdout.strip().splitlines()[-1] == (
        "::error::The last window needs attention (a rollback or the banner's removal failed):"
        " follow the steps in the previous attempt's log and report by hand; do not re-run"
        " this job.")
    assert shop.status()["run_id"] == run_id, "no second window"


def test_a_rerun_resumes_an_interrupted_window(shop: Shop) -> None:
    shop.configure(migrate=SLOW_ON_PRODUCTION)
    workflow_for(shop)
    window, _sleeper = shop.start_until_sleeping()
    window.send_signal(signal.SIGTERM)  # the runner was cancelled, say
    assert window.wait(timeout=30) == 5, shop.background_output()
    run_id = shop.status()["run_id"]

    again = rerun(shop)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "Attempt 2 resumes the interrupted window." in again.stdout
    status = shop.status()
    assert (status["run_id"], status["state"]) == (run_id, "completed")
    assert shop.banner_log() == ["on", "off"]


def test_a_rerun_of_a_job_that_stopped_before_any_window_runs_one(shop: Shop) -> None:
    workflow_for(shop)

    again = rerun(shop)

    assert again.returncode == 0, again.stdout + again.stderr
    assert shop.status()["state"] == "completed"
