"""The user's migration command, run against one database (production in ``migrate``, staging or
a scratch copy in the rehearsal) with every statement and lock wait bounded; a failure names
what the tool's own table records."""

from __future__ import annotations

import time

import psycopg

from orchestrator.engine import proc
from orchestrator.engine.context import Context
from orchestrator.errors import PhaseFailed, WindowError
from orchestrator.postgres import migrations, pg

FAILURE_LOOKUP_SECONDS = 10.0


def run_migration(ctx: Context, db: pg.Db) -> str:
    settings = ctx.settings.migrate
    cwd = ctx.settings.path(settings.workdir) if settings.workdir else None
    result = ctx.run_command(settings.command, db=db, cwd=cwd, env=bounded_env(ctx, db))
    if result.exit_code != 0:
        raise PhaseFailed(f"migration on {db} exited {result.exit_code}: {proc.tail(result.output)}"
                          + "".join(f"; {failure}" for failure in recorded_failures(ctx, db)))
    return proc.tail(result.output)


def recorded_failures(ctx: Context, db: pg.Db) -> list[str]:
    """The failed migrations the tool's own table records: they say more than its exit code
    (which migration, its log, how to resolve it by hand)."""
    if ctx.settings.migrate.tool == "none":
        return []
    try:
        with ctx.connect(db, deadline=time.time() + FAILURE_LOOKUP_SECONDS) as conn:
            state = migrations.read(conn, ctx.settings.migrate, None, db.schema)
    except (WindowError, psycopg.Error) as exc:
        ctx.log.warning("migration_table_unreadable", error=str(exc))
        return []
    production = db == ctx.target  # a failure there is rolled back, staging keeps its own
    return [f"{state.table}: {failed.describe(rolled_back=production)}"
            for failed in state.failed]


def bounded_env(ctx: Context, db: pg.Db) -> dict[str, str]:
    """The command's environment, with every statement and lock wait of its sessions
    bounded, where every client finds it: in the ``options`` of the database URL it is
    handed, and of every other variable holding a URL of the same database (Prisma's
    engine reads only a URL, never PGOPTIONS, and migrates through ``directUrl``,
    ``DIRECT_URL`` say, where the schema names one), and in PGOPTIONS (for a libpq client
    given host and database some other way)."""
    env = ctx.command_env(db)
    settings = ctx.settings.migrate
    statement = settings.statement_timeout or ctx.remaining()
    bounds = (f"-c lock_timeout={max(1, int(settings.lock_timeout * 1000))}"
              f" -c statement_timeout={max(1000, int(statement * 1000))}")
    for name, value in list(env.items()):
        if value == db.url:
            env[name] = db.url_with_options(bounds)
        elif db.named_by(value):  # the same database by another URL: Prisma's directUrl,
            env[name] = pg.Db.from_url(value).url_with_options(bounds)  # which migrate uses
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {bounds}".strip()
    return env


def tool_state(ctx: Context, db: pg.Db) -> migrations.ToolState | None:
    """What the migration tool's table records in ``db``; None with ``tool = "none"``, where
    nothing can tell what a migration applied."""
    if ctx.settings.migrate.tool == "none":
        return None
    with ctx.connect(db) as conn:
        return migrations.read_configured(conn, ctx.settings, db.schema)


def newly_applied(before: migrations.ToolState, after: migrations.ToolState) -> list[str]:
    """The migrations ``after`` records as applied that ``before`` did not."""
    known = set(before.applied)
    return [name for name in after.applied if name not in known]
