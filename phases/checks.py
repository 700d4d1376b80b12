"""The ``[[checks]]`` of window.toml, run against one database (staging or production).

Each check has its own timeout inside the phase's deadline. A check that runs out of its own
time fails; the phase running out of time is a phase timeout.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import psycopg

from orchestrator import pg
from orchestrator.config import Check, CommandCheck, HttpCheck, SqlCheck
from orchestrator.context import Context
from orchestrator.errors import PhaseFailed, PhaseTimeout
from orchestrator.redact import redact


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str


def run_all(ctx: Context, db: pg.Db) -> list[Outcome]:
    """Every check, in order; PhaseFailed naming each one that did not pass."""
    outcomes = [run_one(ctx, check, db) for check in ctx.settings.checks]
    failed = [o for o in outcomes if not o.passed]
    if failed:
        reasons = "; ".join(f"{o.name}: {o.detail}" for o in failed)
        raise PhaseFailed(f"{len(failed)} check(s) failed on {db}: {reasons}")
    return outcomes


def run_one(ctx: Context, check: Check, db: pg.Db) -> Outcome:
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
            return _http(check, deadline)
        case SqlCheck():
            return _sql(ctx, check, db, deadline)
        case CommandCheck():
            return _command(ctx, check, db, deadline)


def _http(check: HttpCheck, deadline: float) -> tuple[bool, str]:
    request = urllib.request.Request(check.url, method="GET")  # noqa: S310 - the user's URL
    try:
        with urllib.request.urlopen(request, timeout=max(0.1, deadline - time.time())) as answer:  # noqa: S310
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException,
            ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{check.url} did not answer: {reason}"
    return status == check.expect_status, f"HTTP {status} (expected {check.expect_status})"


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
    result = ctx.run_command(check.command, db=db, deadline=deadline)
    if result.exit_code != 0:
        return False, f"exited {result.exit_code}"
    if check.expect_output is not None and check.expect_output not in result.stdout:
        return False, f"output lacks {check.expect_output!r}"
    return True, "exited 0"

