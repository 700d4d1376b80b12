"""The safety gates that stand before anything runs: databases named, phrase typed, a git
checkout, nobody else at the wheel. Each refusal is one sentence and exit 3."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psycopg
import structlog

from orchestrator.config import Settings
from orchestrator.errors import GateRefused, PhaseFailed, WindowError
from orchestrator.postgres import identity, migrations, pg
from orchestrator.redact import loose_passwords, redact, register, register_url

TTY_PROMPT_SECONDS = 300.0
PIPE_PROMPT_SECONDS = 10.0


def database(settings: Settings, variable: str, role: str,
             refusal: type[WindowError] = GateRefused) -> pg.Db:
    """The database a variable names; its password is registered for redaction first."""
    url = os.environ.get(variable, "").strip()
    if not url:
        raise refusal(f"{variable} is not set: it must hold the {role} database URL"
                      f" ([{role}] url_env in {settings.config_dir / 'window.toml'}).")
    register_url(url)
    try:
        db = pg.Db.from_url(url)
    except (psycopg.ProgrammingError, UnicodeError) as exc:  # %ff: not UTF-8 once decoded
        raise refusal(f"{variable} is not a valid PostgreSQL URL.") from exc
    except ValueError as exc:
        raise refusal(f"{variable} cannot be used: {exc}.") from exc
    register(db.params.get("password"))  # ?password=... and keyword forms too
    register(os.environ.get("PGPASSWORD"))
    # A raw "/" in the password: libpq read the user as the host and the password as the
    # port, and str(db) would print it.
    if "password" not in db.params and any(pw in str(db) for pw in loose_passwords(url)):
        raise refusal(f"{variable} is not a valid PostgreSQL URL: percent-encode the"
                      " password's special characters (/ as %2F, @ as %40).")
    return db


def databases(settings: Settings, refusal: type[WindowError] = GateRefused
              ) -> tuple[pg.Db, pg.Db]:
    """Production and staging; where no staging database is needed (a clone beside
    production), production's server stands in as staging's and no variable is read."""
    target = database(settings, settings.target.url_env, "target", refusal)
    if not settings.staging.needs_url:
        return target, target
    return target, database(settings, settings.staging.url_env, "staging", refusal)


def distinct(settings: Settings, target: pg.Db, staging: pg.Db,
             refusal: type[WindowError] = GateRefused) -> None:
    """Staging is never production, whatever names reach them: asked of the servers (an
    advisory lock taken on staging, looked for from production), never read from the URLs.
    Where the servers cannot say, refuse rather than guess. Skipped only where the rehearsal
    never touches staging: a clone beside production (``clone_on = "production"``)."""
    if not settings.staging.needs_url:
        return
    deadline = time.time() + settings.target.connect_timeout
    try:
        with pg.connect(staging, deadline, waiting=waiting_for("staging", staging)) as holder, \
                pg.connect(target, deadline, waiting=waiting_for("production", target)) as looker:
            same = identity.same_database(holder, looker)
    except (PhaseFailed, psycopg.Error) as exc:
        why = exc.message if isinstance(exc, PhaseFailed) else redact(str(exc).strip())
        raise refusal(_cannot_tell(target, staging, why)) from exc
    if same:
        raise refusal(_one_database(settings, target, staging))


def distinct_on(settings: Settings, holder: psycopg.Connection[Any],
                looker: psycopg.Connection[Any], *, target: pg.Db, staging: pg.Db,
                refusal: type[WindowError] = GateRefused) -> None:
    """``distinct`` on connections already open (preflight asks them more): ``holder`` on
    staging, ``looker`` on production."""
    try:
        same = identity.same_database(holder, looker)
    except psycopg.Error as exc:
        raise refusal(_cannot_tell(target, staging, redact(str(exc).strip()))) from exc
    if same:
        raise refusal(_one_database(settings, target, staging))


def _cannot_tell(target: pg.Db, staging: pg.Db, why: str) -> str:
    return (f"cannot tell whether staging ({staging}) and production ({target}) are different"
            f" databases: {why}; nothing was done.")


def _one_database(settings: Settings, target: pg.Db, staging: pg.Db) -> str:
    return (f"staging ({staging}, from ${settings.staging.url_env}) reaches production"
            f" ({target}, from ${settings.target.url_env}): one database under two names."
            " Nothing was done; point the staging variable at another database, or rehearse"
            ' on a copy ([staging] mode = "clone").')


def waiting_for(role: str, db: pg.Db) -> Callable[[int, int, str], None]:
    """A line per failed attempt to reach ``db`` while ``pg.connect`` retries: a cold
    database is waited for, never silently."""
    def say(attempt: int, expected: int, why: str) -> None:
        structlog.get_logger().warning("waiting_for_database", database=f"{role} {db}",
                                       attempt=f"{attempt} of {expected}", error=why)
    return say


def confirm(settings: Settings, given: str | None, summary: str,
            stdin: TextIO | None = None, prompt: TextIO | None = None) -> None:
    phrase = settings.window.confirm_phrase
    if given is None:
        out = prompt or sys.stderr
        out.write(f"{summary}\nType {phrase!r} to proceed: ")
        out.flush()
        given = _read_line(stdin or sys.stdin)
        out.write("\n")  # a terminal echoed the typed line; a pipe did not
        if given is None:
            raise GateRefused("no confirmation phrase was typed (standard input closed or"
                              " silent); pass --confirm or type it at the prompt.")
    if given != phrase:
        raise GateRefused("the confirmation phrase does not match [window] confirm_phrase;"
                          " nothing was done.")


def _read_line(stdin: TextIO) -> str | None:
    """One line, or None at end of input or when nothing comes in time: it never hangs."""
    try:
        fileno = stdin.fileno()
        interactive = os.isatty(fileno)
    except (OSError, ValueError):
        return None
    wait = TTY_PROMPT_SECONDS if interactive else PIPE_PROMPT_SECONDS
    ready, _, _ = select.select([fileno], [], [], wait)  # Ctrl-C: Interrupted, exit 5
    line = stdin.readline() if ready else ""
    return line.rstrip("\r\n") if line else None


def git_repo(settings: Settings) -> None:
    if not settings.window.require_git_repo:
        return
    if git("rev-parse", "--is-inside-work-tree") != "true":
        raise GateRefused(f"the working directory {Path.cwd()} is not inside a git repository"
                          " ([window] require_git_repo = true).")


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def migration_tool(settings: Settings, target: pg.Db) -> migrations.ToolState:
    """What the migration tool's table says on production, before anything runs; a failed
    migration it records refuses the window (the tool would refuse to deploy anyway)."""
    try:
        with pg.connect(target, time.time() + settings.target.connect_timeout) as conn:
            return judged(tool_state(settings, conn, target, "production"))
    except psycopg.Error as exc:  # the session lost on the way
        raise GateRefused(f"cannot read the migration tool's table on production {target}:"
                          f" {redact(str(exc).strip().splitlines()[0])}") from exc


def tool_state(settings: Settings, conn: psycopg.Connection[Any], db: pg.Db, where: str
               ) -> migrations.ToolState:
    """The tool's table on ``db`` (``where`` names it), read on an open session; a table
    this role may not read refuses in one sentence."""
    try:
        return migrations.read_configured(conn, settings, db.schema)
    except PhaseFailed as exc:
        raise GateRefused(f"cannot read the migration tool's table on {where}: {exc.message}"
                          ) from exc
    except psycopg.Error as exc:
        raise GateRefused(f"cannot read the migration tool's table on {where} {db}:"
                          f" {redact(str(exc).strip().splitlines()[0])}") from exc


def judged(state: migrations.ToolState) -> migrations.ToolState:
    """Production's table as a window may start on it: no failed migration recorded, and
    no applied one that the files do not define."""
    if state.failed:
        raise GateRefused(f"production's {state.table} records a failed migration:"
                          f" {state.failed[0].describe()}. Nothing was done.")
    if state.unknown:
        raise GateRefused(f"production's {state.table} records {', '.join(state.unknown)},"
                          " which no file in [migrate] files defines (wrong folder or branch?)."
                          " Nothing was done.")
    return state
