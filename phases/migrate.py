"""Migrate: the configured migration command, with ``DATABASE_URL`` set to production.

The staging rehearsal runs the same command through ``run_migration`` with staging's URL.
"""

from __future__ import annotations

from orchestrator import pg
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed
from phases.base import PhaseResult

TAIL_LINES = 8


def run_migration(ctx: Context, db: pg.Db) -> str:
    settings = ctx.settings.migrate
    cwd = ctx.settings.path(settings.workdir) if settings.workdir else None
    result = ctx.run_command(settings.command, db=db, cwd=cwd, env=bounded_env(ctx, db))
    if result.exit_code != 0:
        raise PhaseFailed(
            f"migration on {db} exited {result.exit_code}: {tail(result.output)}"
        )
    return tail(result.output)


def bounded_env(ctx: Context, db: pg.Db) -> dict[str, str]:
    """The command's environment, with PGOPTIONS bounding every statement and lock wait of
    its sessions. libpq clients (psql, psycopg, Alembic on psycopg) read it; JDBC (Flyway)
    and Prisma's engine do not."""
    env = ctx.command_env(db)
    settings = ctx.settings.migrate
    statement = settings.statement_timeout or ctx.remaining()
    bounds = (f"-c lock_timeout={max(1, int(settings.lock_timeout * 1000))}"
              f" -c statement_timeout={max(1000, int(statement * 1000))}")
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {bounds}".strip()
    return env


def tail(output: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


class Migrate:
    name = "migrate"

    def run(self, ctx: Context) -> PhaseResult:
        output = run_migration(ctx, ctx.target)
        ctx.log.info("migration_applied", database=str(ctx.target))
        return PhaseResult(f"migrated {ctx.target}", {"output": output})
