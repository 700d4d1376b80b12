"""``window plan``: what ``run`` would do, resolved and validated, touching nothing; and
``window announce``: the advance notice of a planned window, sent."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from orchestrator.config import Check, HttpCheck, Settings, require_contacts
from orchestrator.engine import banners, eta, gates, notify, proc, rehearsals
from orchestrator.engine.machine import RECOVERY, forward
from orchestrator.engine.notify import Notifier, render
from orchestrator.errors import ConfigError, ExitCode, GateRefused, PhaseFailed, UsageError
from orchestrator.postgres import follow, migrations, pg, privileges, tools
from orchestrator.postgres.migrations import named
from orchestrator.redact import redact
from orchestrator.toolkit import following


@dataclass(frozen=True)
class LookedUp:
    """What plan learnt from the servers, as lines."""

    major: int
    programs: str
    pending: list[str]
    rollback: list[str]
    follow: list[str]
    clinic: list[str]


def describe(settings: Settings) -> str:
    """What ``run`` would do; refused wherever ``run`` would refuse, with its exit code:
    plan connects (read-only) to production and staging, as run does first."""
    target, staging = prepared(settings)
    gates.distinct(settings, target, staging, refusal=ConfigError)
    gates.git_repo(settings)
    return plan_text(settings, target, staging, _looked_up(settings, target, staging))


def prepared(settings: Settings) -> tuple[pg.Db, pg.Db]:
    """What plan checks before it asks any server: someone to call, the two databases
    named, a banner template that reads, a page folder the banner can write in."""
    require_contacts(settings.contacts)
    target, staging = gates.databases(settings, refusal=ConfigError)
    banners.template(settings)  # a maintenance page template that cannot be read stops here
    banners.require_page_folder(settings)  # a page no web server would serve
    return target, staging


def plan_text(settings: Settings, target: pg.Db, staging: pg.Db, found: LookedUp) -> str:
    """The plan as text, from the settings and what the servers said."""
    rehearsed_by, rehearsal = rehearsals.latest(settings)
    expected = eta.estimate(settings, rehearsal)
    lines = [
        f"window {settings.window.name!r}",
        f"  production  {target}   (from ${settings.target.url_env})",
        f"  staging     {settings.staging.shown(str(staging))}"
        + (f"   (from ${settings.staging.url_env})" if settings.staging.needs_url else ""),
        f"  backup      {settings.path(settings.backup.dir)}/<run_id>  (pg_dump -Fd"
        f" -j{settings.backup.jobs}, compress {settings.backup.compress})",
        f"  state       {settings.state_dir}" + (
            f" (a cache of {settings.state.uri}: lease {settings.state.lease_ttl:g}s,"
            f" archives to {settings.backup_s3_uri})" if settings.state.backend == "s3"
            else ""),
        f"  banner      {banners.target(settings)}",
        f"  banner on   {banners.describe(settings, 'on')}",
        f"  banner off  {banners.describe(settings, 'off')}",
        f"  server      PostgreSQL {found.major} on production; {found.programs}",
        f"  migrate     {redact(proc.describe(settings.migrate.command))}",
        *found.pending,
        *found.clinic,
        *found.rollback,
        *found.follow,
        *([f"  tool        {settings.migrate.tool}, its table against"
           f" {settings.migrate.files or '(no files: failures only)'}"]
          if settings.migrate.tool != "none" else []),
        f"  drain       up to {settings.migrate.drain_timeout:g}s for busy sessions"
        + (", ending those idle in a transaction"
           if settings.migrate.terminate_idle_in_transaction else ""),
        "",
        "  phases (timeout, expected):",
        *[f"    {p:<20} {settings.timeout(p):>6g}s  ~{eta.shown(expected.phases[p])}"
          + (" rehearsed" if p in expected.measured else "")
          for p in forward(settings.backup.when)],
        "  on failure after the banner is up:",
        *[f"    {p:<20} {settings.timeout(p):>6g}s" for p in RECOVERY],
        *_eta(settings, expected, rehearsed_by),
        *([f"  in place    a rollback takes about {eta.shown(_in_place_s(expected))} with the"
           " banner up (a dump and a restore) where a swap takes about a second"]
          if settings.backup.rollback == "in_place" else []),
        "",
        "  checks, on staging in the dry-run and on production after the migration:",
        *[f"    {c.name:<20} {c.kind:<8} timeout {c.timeout:g}s{_where(c)}"
          for c in settings.checks],
        *[f"    {name:<20} built-in" for name in settings.builtin_checks],
        *_baseline(settings),
        f"  monitor     every {settings.monitor.interval:g}s during migrate and rollback"
        if settings.monitor.enabled else "  monitor     off",
        _notify(settings),
        "  contacts    " + "; ".join(settings.contacts.lines()),
    ]
    return "\n".join(lines)


def _looked_up(settings: Settings, target: pg.Db, staging: pg.Db) -> LookedUp:
    """Production's server, the client programs for it, what is pending where, and the
    rollback's path: read-only, bounded by ``[target] connect_timeout``."""
    deadline = time.time() + settings.target.connect_timeout
    with pg.connect(target, deadline) as conn:
        major = pg.server_major(conn)
        path = privileges.rollback_path(
            conn, creates_databases=settings.backup.creates_databases)
        production = _tool_state(settings, conn, target, "production")
        if production is not None:  # a failed or unknown migration recorded: run refuses
            gates.judged(production)
        follows = _follow(settings, conn)
    try:
        programs = ", ".join(f"{name} {tools.find(name, major)}"
                             for name in ("pg_dump", "pg_restore"))
    except PhaseFailed as exc:  # run's preflight stops there: exit 3 alike
        raise GateRefused(exc.message) from exc
    rehearsed_on = settings.staging.mode == "url"
    staged = None
    if rehearsed_on and production is not None:
        with pg.connect(staging, deadline) as conn:
            staged = _tool_state(settings, conn, staging, "staging")
    rollback = _rollback(settings, path)
    if path.lacks and settings.backup.method != "rds_snapshot":  # run's preflight stops there
        raise GateRefused(path.refusal())
    return LookedUp(major, programs, _pending_lines(production, staged), rollback, follows,
                    _clinic(settings, production))


def _clinic(settings: Settings, production: migrations.ToolState | None) -> list[str]:
    """The clinic's verdict on what is pending, as ``run`` gives it: its errors listed and
    refused with run's exit code, its warnings counted."""
    if settings.migrate.files is None or not settings.lint.enabled \
            or (production is not None and production.pending == ()):  # run: nothing to do
        return []
    from orchestrator.clinic import examine  # noqa: PLC0415 - pglast only with files to read

    findings = examine.shown(examine.examine(settings, production))
    errors = [finding for finding in findings if finding.severity == "error"]
    if errors:
        print("\n".join(map(str, errors)))
        raise GateRefused(f"the migration clinic found {examine.summary(findings)}: `run`"
                          " refuses on the errors listed above (`window lint` shows every"
                          " finding).")
    return [f"  clinic      {examine.summary(findings)}"
            + ("; `window lint` lists them" if findings else "")]


def _follow(settings: Settings, conn: psycopg.Connection[Any]) -> list[str]:
    """Whether the standby will follow production (and why not), and what earlier windows
    left on the server, with the statements that drop it."""
    reason = following.why_not(settings, conn)
    lines = [f"  follow      the standby follows production from the backup's snapshot until"
             f" the banner (logical replication): a rollback loses no write; up to"
             f" {settings.backup.follow_catch_up:g}s behind the banner to catch up"
             if reason is None else
             f"  follow      off ({reason}): a rollback loses the writes made between the"
             " backup's snapshot and the banner (reported, kept in the retained database)"]
    return lines + [f"  warning: left by an earlier window: {left.words()}"
                    for left in follow.leftovers(conn)]


def _tool_state(settings: Settings, conn: psycopg.Connection[Any], db: pg.Db, where: str
                ) -> migrations.ToolState | None:
    """The tool's table as run reads it (a table this role may not read refuses alike)."""
    if settings.migrate.tool == "none":
        return None
    return gates.tool_state(settings, conn, db, where)


def _pending_lines(production: migrations.ToolState | None,
                   staged: migrations.ToolState | None) -> list[str]:
    if production is None:
        return ['  pending     unknown: with [migrate] tool = "none" nothing can tell what is'
                " pending, or what the rehearsal applied"]
    pending = production.pending
    lines = [f"  pending     on production: {named(list(pending))} ({len(pending)})" if pending
             else "  pending     on production: nothing" if pending == ()
             else "  pending     on production: unknown (no [migrate] files)"]
    if staged is not None:
        same = set(staged.applied) == set(production.applied)
        lines.append("              on staging: the same history as production" if same else
                     "              on staging: NOT the history production holds; run stops"
                     " before the rehearsal (refresh staging, or [staging] mode = \"clone\")")
    return lines


def _rollback(settings: Settings, path: privileges.RollbackPath) -> list[str]:
    backup = settings.backup
    if backup.method == "rds_snapshot":
        return ["  rollback    restore the RDS snapshot into a new instance, then switch the"
                " application to it by hand (the banner stays up)"]
    notes = [f"              note: {note}" for note in path.notes]
    if backup.rollback == "in_place":
        return [f"  rollback    in place: production is dumped (kept as <run_id>.failed beside"
                f" the backup), emptied, and the archive restored into it; role {path.role}"
                " may take it", *notes]
    how = ("swap in the standby proven at the backup" if backup.verify == "restore" else
           "restore the archive into a new database (verify = \"list\" defers it), then swap")
    return [f"  rollback    {how}; production is kept as <db>_failed_<run_id>; role"
            f" {path.role} may take it", *notes]


def _in_place_s(expected: eta.Eta) -> float:
    """An in-place rollback's time: dumping production (about the backup's dump) and
    restoring the archive (the rehearsed restore, else the rollback's figure)."""
    return expected.phases.get("backup", 0.0) + expected.rollback_s


def _notify(settings: Settings) -> str:
    name = settings.notify.urls_env
    count = len(notify.urls(settings))
    if not name:
        return "  notify      off (set [notify] urls_env)"
    return f"  notify      {count} service(s) from ${name}" + ("" if count else ": none set!")


def _baseline(settings: Settings) -> list[str]:
    section = settings.baseline
    if not (section.queries or section.from_pg_stat_statements):
        return []
    busiest = f", the {section.from_pg_stat_statements} busiest statements of" \
        " pg_stat_statements" if section.from_pg_stat_statements else ""
    return ["", "  baseline, before the banner and again in post_check (median of"
                f" {section.runs}; slower than {section.max_slowdown:g}x:"
                f" {section.on_slowdown}){busiest}:",
            *[f"    {q.name}" for q in section.queries]]


def _where(check: Check) -> str:
    """What an http check asks in each place: the rehearsal never asks production's app."""
    if not isinstance(check, HttpCheck):
        return ""
    if check.staging_url is None:
        return f"  {redact(check.url)}; the rehearsal SKIPS it (no staging_url)"
    return f"  {redact(check.url)}; rehearsal: {redact(check.staging_url)}"


def _eta(settings: Settings, expected: eta.Eta, rehearsed_by: str) -> list[str]:
    source = (f"rehearsed by window {rehearsed_by} where measured, else the runbook's timeline"
              if expected.source == "rehearsal" else
              "by the runbook's timeline (nothing rehearsed yet: `window run` measures it)")
    window = f"the {eta.shown(expected.length_s)} window" + (
        "" if settings.window.length else " (the forward timeouts; set [window] length)")
    lines = ["", f"  eta                 ~{eta.shown(expected.expected_s)}, {source}"]
    no_return = expected.point_of_no_return_s
    if no_return < 0:
        return [*lines, f"  point of no return  none: a rollback alone takes up to"
                        f" {eta.shown(expected.rollback_s)}, longer than {window}"]
    lines.append(f"  point of no return  +{eta.shown(no_return)} into {window}: a rollback"
                 f" then takes up to {eta.shown(expected.rollback_s)}")
    checked = expected.ends_s("post_check")
    if checked > no_return:
        lines.append(f"  warning: post_check is expected to end at +{eta.shown(checked)}, past"
                     " the point of no return: a late failure could not be rolled back"
                     " inside the window")
    return lines


def announce(settings: Settings, at: str, tz: str) -> int:
    """``window announce``: the advance notice, sent; 0 when every service took it."""
    start = local_time(at, tz)
    notifier = Notifier(settings)
    if not notifier.configured:
        raise ConfigError(f"nothing to send through: set [notify] urls_env and put apprise"
                          f" URLs in ${settings.notify.urls_env or 'WINDOW_NOTIFY_URLS'}.")
    expected = eta.estimate(settings, rehearsals.latest(settings)[1]).expected_s
    end = start + timedelta(seconds=expected)
    text = render(settings.communication.notice, settings, tz=tz,
                  start=start.strftime("%Y-%m-%d %H:%M %Z"),
                  end=end.strftime("%Y-%m-%d %H:%M %Z"), duration=eta.shown(expected))
    title = f"[{settings.window.name}] planned maintenance on {start:%Y-%m-%d %H:%M %Z}"
    sent = notifier.send("notice", title, text)
    print(f"{'sent' if sent else 'NOT sent (see notify_failed)'}: {title}\n\n{text}")
    return ExitCode.COMPLETED if sent else ExitCode.FAILED


def local_time(at: str, tz: str) -> datetime:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"--tz {tz!r} is not a time zone such as Europe/Athens.") from exc
    try:
        return datetime.strptime(at, "%Y-%m-%d %H:%M").replace(tzinfo=zone)
    except ValueError as exc:
        raise UsageError(f"--at {at!r} is not a time such as \"2026-12-01 02:00\".") from exc
