"""The ``[[checks]]`` of window.toml, run against one database (staging or production).

Each check has its own timeout inside the phase's deadline. A check that runs out of its own
time fails; the phase running out of time is a phase timeout.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.config import Check, CommandCheck, HttpCheck, LogCheck, SqlCheck
from orchestrator.engine import proc
from orchestrator.engine.context import Context
from orchestrator.engine.facts import LOG_OFFSETS
from orchestrator.errors import PhaseFailed, PhaseTimeout
from orchestrator.postgres import migrations, pg
from orchestrator.redact import redact
from orchestrator.toolkit import probes


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str
    skipped: bool = False


def run_all(ctx: Context, db: pg.Db, migrate_phase: str) -> list[Outcome]:
    """Every configured check, then the built-in ones, in order; PhaseFailed naming each one
    that did not pass. ``migrate_phase`` names the phase whose migrate command's sessions
    must all be gone by now."""
    outcomes = [run_one(ctx, check, db) for check in ctx.settings.checks]
    if builtin := ctx.settings.builtin_checks:
        with ctx.connect(db) as conn:  # one session asks them all
            outcomes += [_tool_state(ctx, conn, db) if name == "migration-tool-state"
                         else _builtin(ctx, conn, name, BUILTIN_QUERIES[name], migrate_phase)
                         for name in builtin]
    failed = [o for o in outcomes if not o.passed]
    if failed:
        reasons = "; ".join(f"{o.name}: {o.detail}" for o in failed)
        raise PhaseFailed(f"{len(failed)} check(s) failed on {db}: {reasons}")
    return outcomes


def run_one(ctx: Context, check: Check, db: pg.Db) -> Outcome:
    on_production = str(db) == str(ctx.target)
    if isinstance(check, HttpCheck) and not on_production and check.staging_url is None:
        ctx.log.warning("check_skipped", check=check.name, kind=check.kind,
                        reason="no staging_url: the rehearsal never asks production's"
                               " application and calls the answer staging's")
        return Outcome(check.name, True, "skipped: no staging_url", skipped=True)
    deadline = min(ctx.deadline, time.time() + check.timeout)
    started = time.monotonic()
    try:
        passed, detail = _run(ctx, check, db, deadline)
    except PhaseTimeout:
        if time.time() >= ctx.deadline:
            raise
        passed, detail = False, f"no answer within {check.timeout:g}s"
    except PhaseFailed as exc:
        passed, detail = False, exc.message
    outcome = Outcome(check.name, passed, redact(detail))
    ctx.log.info("check_passed" if passed else "check_failed", check=check.name,
                 kind=check.kind, detail=outcome.detail,
                 duration_s=round(time.monotonic() - started, 3))
    return outcome


def _run(ctx: Context, check: Check, db: pg.Db, deadline: float) -> tuple[bool, str]:
    match check:
        case HttpCheck():
            if str(db) == str(ctx.target):
                return probes.http_answers(check, check.url, check.headers, deadline)
            if check.staging_url is None:  # run_one skips it: never production's app
                return False, "no staging_url"
            return probes.http_answers(check, check.staging_url, check.staging_headers,
                                       deadline)
        case LogCheck():
            offsets = (ctx.journal.get(ctx.run_id, LOG_OFFSETS) or {}).get(check.name, {})
            return probes.log_is_clean(ctx.settings, check, offsets)
        case SqlCheck():
            return _sql(ctx, check, db, deadline)
        case CommandCheck():
            return _command(ctx, check, db, deadline)


BUILTIN_SETTLE_SECONDS = 3.0
BUILTIN_QUERIES = {
    # A failed CREATE INDEX CONCURRENTLY leaves an index that is never used but still kept up.
    "no-invalid-indexes": "SELECT coalesce(string_agg(indexrelid::regclass::text, ', '), '')"
                          " FROM pg_index WHERE NOT indisvalid",
    # A migrate session still alive after its command ended holds its locks (and Prisma's
    # advisory lock) and blocks the next deploy.
    "no-migrate-sessions": "SELECT coalesce(string_agg(pid::text, ', '), '')"
                           " FROM pg_stat_activity WHERE application_name = %(app)s",
}


def _builtin(ctx: Context, conn: psycopg.Connection[Any], name: str, query: str,
             migrate_phase: str) -> Outcome:
    # A backend leaves pg_stat_activity a moment after its client has gone: look again
    # for a short while before calling a finding real.
    settle = time.monotonic() + BUILTIN_SETTLE_SECONDS
    while True:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(query, {"app": f"window/{ctx.run_id}/{migrate_phase}"}).fetchone()
        found = str(row[0]) if row else ""
        if not found or time.monotonic() >= settle:
            break
        time.sleep(0.2)
    return _builtin_outcome(ctx, name, f"found: {found}" if found else "")


def _tool_state(ctx: Context, conn: psycopg.Connection[Any], db: pg.Db) -> Outcome:
    """The migration tool's own table: no failed migration, nothing left pending."""
    state = migrations.read_configured(conn, ctx.settings, db.schema)
    return _builtin_outcome(ctx, "migration-tool-state", "; ".join(state.problems()),
                            f"{state.table}: no failed migration"
                            + (", nothing pending" if state.pending is not None else ""))


def _builtin_outcome(ctx: Context, name: str, problem: str, fine: str = "none found"
                     ) -> Outcome:
    outcome = Outcome(name, not problem, redact(problem) or fine)
    ctx.log.info("check_passed" if outcome.passed else "check_failed", check=name,
                 kind="builtin", detail=outcome.detail)
    return outcome


def _sql(ctx: Context, check: SqlCheck, db: pg.Db, deadline: float) -> tuple[bool, str]:
    try:
        with ctx.connect(db, deadline=deadline) as conn:
            remaining_ms = max(1, int((deadline - time.time()) * 1000))
            conn.execute(f"SET statement_timeout = {remaining_ms}")
            row = conn.execute(check.query).fetchone()
    except psycopg.errors.QueryCanceled:
        return False, f"query ran past {check.timeout:g}s"
    except psycopg.Error as exc:
        return False, f"query failed: {str(exc).strip().splitlines()[0]}"
    value = row[0] if row else None
    return value is True, f"first value {value!r} (expected true)"


def _command(ctx: Context, check: CommandCheck, db: pg.Db, deadline: float
             ) -> tuple[bool, str]:
    # Its own application_name: a check's sessions are not the migrate command's; its
    # WINDOW_PHASE is the phase it checks for.
    own = replace(ctx, phase=f"{ctx.phase}/checks")
    env = {**own.command_env(db), "WINDOW_PHASE": ctx.phase}
    workdir = check.workdir or ctx.settings.migrate.workdir
    with tempfile.TemporaryDirectory(prefix="window-check-") as folder:
        output = Path(folder) / "stdout"  # searched whole, however long
        result = own.run_command(check.command, db=db, deadline=deadline, env=env,
                                 cwd=ctx.settings.path(workdir) if workdir else None,
                                 stdout_to=output)
        if result.exit_code != 0:
            return False, f"exited {result.exit_code}: {proc.tail(result.output)}"
        if check.expect_output is not None and check.expect_output not in output.read_text(
                encoding="utf-8", errors="replace"):
            return False, f"output lacks {check.expect_output!r}: {proc.tail(result.output)}"
    return True, "exited 0"

