"""What ``window status`` shows: one JSON object, or the same facts as a readable table."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.engine import eta
from orchestrator.engine.facts import (
    BACKUP,
    BASELINE,
    DRAIN,
    FOLLOW,
    LINT,
    MIGRATION,
    REHEARSAL,
    REHEARSAL_SKIPPED,
    ROLLBACK,
    ROLLBACK_PAUSED,
    BackupFacts,
    Warnings,
    follow_left,
    follow_words,
    recomputed_words,
    rollback_words,
)
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import FORWARD, TERMINAL, State
from orchestrator.engine.rows import PhaseRow, PhaseStatus, Run
from orchestrator.errors import UsageError, WindowError

if TYPE_CHECKING:
    from orchestrator.config import Settings


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def show(settings: Settings, as_json: bool) -> str:
    """``window status``: kept to what it needs, so it answers at once mid-window. With the
    S3 state backend, the shared journal and lease: the same answer on every machine."""
    from orchestrator.engine import holding  # the state's stores: not for a finished window
    from orchestrator.store import lease

    journal = holding.reader(settings)
    run = journal.latest_run() if journal else None
    if journal is None or run is None:
        fleet = " (a fleet's targets: `window fleet status`, or `--target NAME`)" if (
            settings.state_dir / "targets").is_dir() else ""
        raise UsageError(f"no window has run from {holding.where(settings)} yet{fleet}.")
    holder = lease.current_lease(settings)
    report = status(journal, run, settings,
                    alive=holder.live() if holder else None)
    if holder is not None:
        report["lease"] = holder.as_status()
    # Mid-window status answers from the journal alone: the running window cleans up itself.
    if report["pid"] is None and asks_server(journal, run):
        report["left_on_server"] = _left_on_server(settings, run)
    if run.state in (State.ROLLBACK, State.NEEDS_ATTENTION) and (
            missing := _production_missing(settings, run)):
        report["production_missing"] = missing
        return json.dumps(report, indent=2) if as_json else f"{missing}\n{table(report)}"
    return json.dumps(report, indent=2) if as_json else table(report)


def _production_missing(settings: Settings, run: Run) -> str | None:
    """Where a rollback may have stopped mid-way, whether production's name still names a
    database (asked of the server, for at most 3 s): a sentence with the command to run when
    not; None when it does, or when the server cannot say now."""
    import psycopg  # only where a rollback may have stopped: status stays light otherwise

    from orchestrator.engine import gates
    from orchestrator.postgres import databases, pg

    try:
        target = gates.database(settings, settings.target.url_env, "target", UsageError)
        with pg.connect(target.on(settings.target.maintenance_db), time.time() + 3) as conn:
            if databases.exists(conn, target.dbname):
                return None
    except (WindowError, psycopg.Error):
        return None
    return (f"PRODUCTION IS MISSING: no database is named {target.dbname} on its server"
            f" ({target}). Run `window resume` to finish window {run.run_id}'s rollback (it"
            " swaps the verified copy in), or follow the steps below by hand.")


def asks_server(journal: Journal, run: Run) -> bool:
    """Whether ``window status`` asks production's server what is left on it: where the window
    has not ended (interrupted, or needing attention), or ended without recording its slot,
    subscription and publications dropped. A window that ended whole is told from the journal
    alone (``plan`` still asks the server about every window's leftovers)."""
    return (run.state not in TERMINAL or run.state == State.NEEDS_ATTENTION
            or follow_left(journal.get(run.run_id, FOLLOW)))


def _left_on_server(settings: Settings, run: Run) -> list[str]:
    """Slots, subscriptions and publications an earlier window left on production's server
    (one connection, for at most 3 s), each with the statement that drops it; the running
    window's own are not. Empty when the server cannot say now."""
    import psycopg  # status stays light: only here

    from orchestrator.engine import gates
    from orchestrator.postgres import follow, pg

    keep = run.run_id if run.state not in TERMINAL else None
    try:
        target = gates.database(settings, settings.target.url_env, "target", UsageError)
        with pg.connect(target, time.time() + 3) as conn:
            found = follow.leftovers(conn, keep=keep)
    except (WindowError, psycopg.Error):
        return []
    own = set(follow.names(keep)) if keep else set()
    return [left.words() for left in found if left.name not in own]


def process_alive(run: Run) -> bool:
    from orchestrator.engine import proc  # subprocess and threads: only for a running window

    return bool(run.pid) and proc.start_ticks(run.pid or 0) == run.pid_start


def status(journal: Journal, run: Run, settings: Settings | None = None, *,
           alive: bool | None = None) -> dict[str, Any]:
    """``settings`` (the window's config) adds the ETA; ``alive`` says whether a process
    drives the run (from the lease, when it may run on another machine)."""
    if alive is None:  # an ended window is driven by nobody, whatever its pid says now
        alive = run.state not in TERMINAL and process_alive(run)
    crashed = run.state not in TERMINAL and not alive
    rows = journal.phases(run.run_id)
    phases = [_phase(p, crashed) for p in rows]
    rehearsal = journal.get(run.run_id, REHEARSAL)
    return {
        "run_id": run.run_id,
        "state": run.state,
        "interrupted": run.state not in TERMINAL and (run.interrupted or crashed),
        "pid": run.pid if alive and run.state not in TERMINAL else None,
        "exit_code": run.exit_code,
        "started_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "target": run.target,
        "staging": run.staging,
        "phases": phases,
        "backup": _backup(journal.get(run.run_id, BACKUP)),
        "migration": journal.get(run.run_id, MIGRATION),
        "rollback": journal.get(run.run_id, ROLLBACK),
        "follow": journal.get(run.run_id, FOLLOW),
        "baseline": journal.get(run.run_id, BASELINE) or {},
        "drain": journal.get(run.run_id, DRAIN),
        "lint": (journal.get(run.run_id, LINT) or Warnings(warnings=[]))["warnings"],
        "monitor": [{**s, "at": _iso(s["at"])} for s in journal.samples(run.run_id)],
        "rehearsal": rehearsal,
        "risks": _risks(journal, run),
        # An ended window has no ETA: it took what the phases say.
        "eta": _eta(settings, run, rows, rehearsal)
        if settings and run.state not in TERMINAL else None,
        "left_on_server": [],  # ``show`` asks the server where a window may have left some
    }


def _risks(journal: Journal, run: Run) -> list[str]:
    """What this window took on knowingly, for the record."""
    skipped = journal.get(run.run_id, REHEARSAL_SKIPPED)
    return [f"the migration was not rehearsed (--skip-staging, by {skipped['by']})"] \
        if skipped else []


def _eta(settings: Settings, run: Run, rows: list[PhaseRow], rehearsal: dict[str, Any] | None
         ) -> dict[str, Any]:
    """Expected from the window's start: what the phases that succeeded took, the rehearsed
    (else the timeline's) figure for the others."""
    actual = {row.name: row.finished_at - row.started_at for row in rows
              if row.name in FORWARD and row.status == PhaseStatus.SUCCEEDED and row.started_at
              and row.finished_at}
    expected = eta.estimate(settings, rehearsal, actual)
    return {
        "expected_s": round(expected.expected_s, 3),
        "ends_at": _iso(run.created_at + expected.expected_s),
        "point_of_no_return": _iso(run.created_at + expected.point_of_no_return_s),
        "from": expected.source,
        "length_s": expected.length_s,
        "point_of_no_return_s": round(expected.point_of_no_return_s, 3),
    }


def _backup(facts: BackupFacts | None) -> dict[str, Any]:
    facts = facts or BackupFacts()
    keys = ("path", "size_bytes", "verified", "verification", "standby", "s3_uri", "compress")
    return {**{key: facts.get(key) for key in keys}, "tables": facts.get("tables", {}),
            "materialized_views": facts.get("materialized_views", {}),
            "recomputed_views": facts.get("recomputed_views", [])}


def _phase(row: PhaseRow, crashed: bool) -> dict[str, Any]:
    status = PhaseStatus.INTERRUPTED if crashed and row.status == PhaseStatus.RUNNING \
        else row.status
    duration = (row.finished_at or 0) - (row.started_at or 0) if row.finished_at else None
    return {
        "name": row.name,
        "status": status,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "duration_s": round(duration, 3) if duration is not None else None,
        "timeout_s": row.timeout_s,
        "error": row.error,
    }


def _lease_line(lease: dict[str, Any]) -> str:
    held = f"held, expires in {lease['expires_in_s']:.0f}s" if lease["live"] else "free"
    return (f"  lease {held}: token {lease['token']}, last {lease['holder']} on"
            f" {lease['host']} (pid {lease['pid']}, `window {lease['command']}`)")


def table(report: dict[str, Any]) -> str:
    lines = [
        f"window {report['run_id']}: {report['state']}"
        + (" (interrupted: `window resume` continues)" if report["interrupted"] else "")
        + (f", driven by pid {report['pid']}" if report["pid"] else ""),
        f"  target {report['target']}   staging {report['staging']}",
        *([_lease_line(report["lease"])] if report.get("lease") else []),
        *[f"  RISK: {risk}" for risk in report["risks"]],
        "",
        f"  {'phase':<20} {'status':<12} {'started':<20} {'took':>8} {'timeout':>8}",
    ]
    for phase in report["phases"]:
        took = f"{phase['duration_s']:.1f}s" if phase["duration_s"] is not None else "-"
        timeout = f"{phase['timeout_s']:.0f}s" if phase["timeout_s"] else "-"
        started = (phase["started_at"] or "-").replace("T", " ").replace("+00:00", "")
        lines.append(f"  {phase['name']:<20} {phase['status']:<12} {started:<20} {took:>8}"
                     f" {timeout:>8}")
        if phase["error"]:
            lines.append(f"      {phase['error']}")
    backup = report["backup"]
    if backup["path"]:
        rows = sum(t["rows"] for t in backup["tables"].values())
        proof = "verified by restore" if backup["verified"] else "table of contents read"
        lines += ["", f"  backup {backup['path']}: {len(backup['tables'])} tables, {rows} rows,"
                      f" {backup['size_bytes']} bytes, {proof}"]
        lines += [f"  materialized view stale at the backup, recomputed by the restore (so after"
                  f" a rollback): {recomputed_words(view)}" for view in backup["recomputed_views"]]
    if said := follow_words(report.get("follow")):
        lines.append(f"  follow {said}")
    lines += [f"  WARNING: left on the server by an earlier window: {left}"
              for left in report.get("left_on_server") or []]
    if (migration := report.get("migration")) and migration["applied"]:
        lines.append(f"  migrations applied: {', '.join(migration['applied'])}")
    if rollback := report["rollback"]:
        lines.append(f"  rollback {rollback_words(rollback['method'])} in"
                     f" {rollback['duration_s']:.2f}s; the failed database is kept as"
                     f" {rollback['retained_database']}")
        if rollback["write_gap"]:
            gap = ", ".join(f"{t} ~{n}" for t, n in rollback["write_gap"].items())
            lines.append(f"  writes after the backup, discarded (still in the kept database):"
                         f" {gap}")
        if late := rollback.get("written_behind_banner"):
            lines.append("  written behind the banner, the failed migration's own included"
                         " (in the kept database, not in production): "
                         + ", ".join(f"{t} ~{n}" for t, n in late.items()))
        lines += [f"  left behind: {what}" for what in rollback.get("left_behind") or []]
        lines += [f"  not undone by the restore: {c['what']}; undo: {' '.join(c['undo'].split())}"
                  for c in rollback.get("cluster_changes") or []]
    lines += _rehearsal_lines(report.get("rehearsal"), report.get("eta"))
    lines += _baseline_lines(report.get("baseline") or {})
    lines += _monitor_summary(report["monitor"])
    return "\n".join(lines)


def _rehearsal_lines(rehearsal: dict[str, Any] | None, expected: dict[str, Any] | None
                     ) -> list[str]:
    lines = []
    if rehearsal:
        figures = ", ".join(f"{key.removesuffix('_s')} {rehearsal[key]:.1f}s"
                            for key in ("dump_s", "restore_s", "migrate_s", "checks_s")
                            if rehearsal.get(key) is not None)
        lines.append(f"  rehearsal ({rehearsal['mode']}) on {rehearsal['database']}: {figures}")
    if expected:
        lines.append(f"  eta ~{eta.shown(expected['expected_s'])} (from the {expected['from']}):"
                     f" ends ~{_clock(expected['ends_at'])}; point of no return"
                     f" {_clock(expected['point_of_no_return'])} (window"
                     f" {eta.shown(expected['length_s'])})")
    return ["", *lines] if lines else []


def _clock(iso: str) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC")


def _monitor_summary(samples: list[dict[str, Any]]) -> list[str]:
    """One line per watched phase: the peaks an engineer looks for after the fact."""
    lines = []
    for phase in dict.fromkeys(s["phase"] for s in samples):
        seen = [s for s in samples if s["phase"] == phase]
        lines.append(f"  monitor: {len(seen)} samples during {phase}, peak"
                     f" {max(s['connections'] for s in seen)} connections, max"
                     f" {max(s['waiting'] for s in seen)} waiting, longest"
                     f" {max(s['longest_s'] for s in seen):.1f}s")
    return ["", *lines] if lines else []


def _baseline_lines(entries: dict[str, dict[str, Any]]) -> list[str]:
    """Each baseline entry before and after the migration, flagged when it counted as slow."""
    lines = []
    for name, entry in entries.items():
        cost = entry["measure"] == "plan_cost"
        prefix, unit, key = ("planned cost ", "", "cost") if cost else ("", " ms", "ms")
        before, after = entry[f"before_{key}"], entry[f"after_{key}"]
        shown = f"{after:.1f}{unit}, {entry['ratio']:.1f}x" if after is not None \
            else entry["error"]
        verdict = " SLOW" if entry["slow"] else " BROKEN" if entry["error"] else ""
        lines.append(f"  baseline {name}: {prefix}{before:.1f}{unit} -> {shown}"
                     f" (max {entry['max_slowdown']:g}x){verdict}")
    return ["", *lines] if lines else []


def _paused(run: Run, gap: dict[str, int] | None, off: str) -> str:
    shown = ", ".join(f"{t} ~{n}" for t, n in (gap or {}).items()) or "unmeasured"
    tables = " ".join(f"--table={t}" for t in gap or {}) or "--table=<each written table>"
    return (
        f"The rollback paused: production took writes after the backup ({shown} rows) and a"
        " restore would discard them. Production is untouched and the banner is up. Either:\n"
        f"  1. save those rows first: pg_dump --data-only {tables} \"$DATABASE_URL\""
        f" > window-{run.run_id}-writes.sql\n"
        "  2. then restore, accepting the loss: window abort --accept-data-loss --confirm"
        " <phrase>  (the current database is kept, renamed, with those rows)\n"
        f"  or fix forward by hand and take the banner down yourself: {off}")


def banner_now(phases: list[PhaseRow]) -> str:
    """Whether the maintenance banner is up, from the phases that raise and lower it: "up",
    "down", or "perhaps up" (its command was cut short)."""
    seen = {p.name: p.status for p in phases}
    if PhaseStatus.SUCCEEDED in (seen.get("banner_off"), seen.get("rollback_banner_off")):
        return "down"
    if seen.get("banner_on") == PhaseStatus.SUCCEEDED:
        return "up"
    cut = (PhaseStatus.RUNNING, PhaseStatus.INTERRUPTED)
    return "perhaps up" if seen.get("banner_on") in cut else "down"


def ways_on(phases: list[PhaseRow]) -> str:
    """What an interrupted window's engineer can do next, with where the banner stands."""
    return (f"the maintenance banner is {banner_now(phases)}. `window resume` continues the"
            " window; `window abort` stops it and rolls production back if it changed.")


def advice(journal: Journal, run: Run, settings: Settings) -> str:
    """What the engineer must do by hand when the window ends in ``needs_attention``."""
    failed = [p for p in journal.phases(run.run_id)
              if p.status in (PhaseStatus.FAILED, PhaseStatus.TIMED_OUT)]
    last = failed[-1].name if failed else "rollback"
    from orchestrator.engine import banners  # only for a window that needs attention

    off = banners.describe(settings, "off")
    paused = journal.get(run.run_id, ROLLBACK_PAUSED)
    if paused and last == "rollback":
        situation = _paused(run, paused["write_gap"], off)
    elif (rollback := journal.get(run.run_id, ROLLBACK) or {}).get("instructions"):
        situation = (f"{failed[-1].error if failed else ''}.\n{rollback['instructions']}\n"
                     f"Once production points at the restored instance: {off}")
    elif last == "banner_off":
        situation = ("The migration succeeded and passed every check; only the banner is still"
                     " up. Once what stopped its removal is fixed, `window resume` takes it"
                     f" down; or by hand: {off}")
    elif last == "rollback_banner_off":
        situation = ("Production was restored from the backup and verified; only the banner is"
                     " still up. Once what stopped its removal is fixed, `window resume` (or"
                     f" `window abort`) takes it down; or by hand: {off}")
    else:
        situation = _restore_by_hand(journal, run, off)
    return (f"\nNEEDS ATTENTION ({last} did not succeed); the maintenance banner is"
            f" {banner_now(journal.phases(run.run_id))}. {situation}\n"
            f"The journal and audit log are in {settings.state_dir}.")


def _restore_by_hand(journal: Journal, run: Run, off: str) -> str:
    """A rollback that stopped: the fastest safe way first (the window tries again, from the
    standby verified at the backup), then the same by hand, then from the archive."""
    backup = journal.get(run.run_id, BACKUP) or {}
    from orchestrator.toolkit.dumps import suffixed  # only for a window that needs attention

    name = (run.target or "").rpartition("/")[2]
    retained = suffixed(name, f"_failed_{run.run_id}")
    standby = backup.get("standby")
    fastest = ("Fastest: once what stopped the rollback is fixed (see its error), `window"
               " resume` (or `window abort`) tries it again from where it stopped")
    if standby:
        return (f"{fastest}, swapping in {standby}, the copy verified against the backup"
                f" before the banner went up. By hand, the same (as a role that may end"
                f" every session on {name}): BEGIN; ALTER DATABASE \"{name}\" RENAME TO"
                f" \"{retained}\"; ALTER DATABASE \"{standby}\" RENAME TO \"{name}\"; ALTER"
                f" DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true; COMMIT; (keep {retained}:"
                f" it holds the evidence), then: {off}. Should {standby} be gone, restore the"
                f" archive {backup.get('path')} into a new database (createdb, then pg_restore"
                " --jobs N --exit-on-error --dbname NEW ARCHIVE) and swap it in the same way.")
    return (f"{fastest}, restoring the archive {backup.get('path')} into a new database and"
            " swapping it in. By hand: createdb NEW, pg_restore --jobs N --exit-on-error"
            " --dbname NEW ARCHIVE, compare the row counts (`window status --json`), then as a"
            f" role that may end every session on {name}: BEGIN; ALTER DATABASE \"{name}\""
            f" RENAME TO \"{retained}\"; ALTER DATABASE NEW RENAME TO \"{name}\"; COMMIT;"
            f" (keep {retained}: it holds the evidence; on {run.target}), then: {off}. Keep the"
            " banner up meanwhile: production may hold a half-applied migration.")
