"""The record a window leaves behind: ``report.md`` for a ticket, ``report.html`` for a
browser, and ``window history``.

Every fact comes from the journal (``report.status``, the same facts ``window status`` shows)
and the audit log (which checks ran and how they went, who drove the window). The state
folder's ``report.md`` / ``report.html`` always describe the newest run; ``reports/<run_id>.*``
keep every run's own copy. Writing them happens after the window's outcome is decided and
never changes it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator.config import Settings
from orchestrator.engine import eta
from orchestrator.engine.facts import BACKUP, BASELINE_BEFORE, DATA_LOSS_ACCEPTED
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import TERMINAL
from orchestrator.engine.rows import PhaseStatus, Run
from orchestrator.errors import ExitCode, UsageError
from orchestrator.redact import redact, redact_value
from orchestrator.reporting import as_html, as_markdown
from orchestrator.reporting.sections import clock
from orchestrator.reporting.status import process_alive, status
from orchestrator.store import blobs

FORMATS = ("md", "html")
# The audit events that say who drove the window, and when.
DRIVEN = ("window_started", "window_resumed", "window_abort_taken_over", "abort_requested",
          "window_interrupted", "window_finished")


def gather(journal: Journal, run: Run, settings: Settings) -> dict[str, Any]:
    """Everything a report shows, redacted once here so no renderer can leak a password."""
    facts = status(journal, run, settings)
    raw_backup = journal.get(run.run_id, BACKUP) or {}
    audit = _audit_events(settings.state_dir / "audit.jsonl", run.run_id)
    facts.update(
        window=settings.window.name,
        exit_code=shown_exit_code(facts),
        total_s=run.finished_at - run.created_at if run.finished_at else None,
        who={"user": run.user, "host": run.host, "git_commit": run.git_commit,
             "at": facts["started_at"]},
        driven=[_who(event) for event in audit if event.get("event") in DRIVEN],
        checks=[_check(event) for event in audit
                if event.get("event") in ("check_passed", "check_failed")],
        expected=expected(settings, facts["rehearsal"]),
        baseline=facts["baseline"] or _before_only(journal.get(run.run_id, BASELINE_BEFORE)),
        accepted_loss=journal.get(run.run_id, DATA_LOSS_ACCEPTED),
        contacts=settings.contacts.model_dump(),
        monitor=[{**sample, "at": _iso_ms(sample["at"])} for sample in journal.samples(run.run_id)],
    )
    if facts["interrupted"]:  # this process, about to exit, still counts as alive
        facts["phases"] = [{**p, "status": PhaseStatus.INTERRUPTED}
                           if p["status"] == PhaseStatus.RUNNING else p for p in facts["phases"]]
    facts["backup"].update(manifest_sha256=raw_backup.get("manifest_sha256"),
                           method=raw_backup.get("method", "pg_dump"),
                           snapshot=(raw_backup.get("snapshot") or {}).get("snapshot_id"))
    return dict(redact_value(facts))


def _iso_ms(at: float) -> str:
    """Samples come a fraction of a second apart: ``status`` rounds to the second."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def shown_exit_code(facts: dict[str, Any]) -> int | None:
    """The run's exit code; an interrupted window was left with 5 and records none."""
    if facts["exit_code"] is not None:
        return int(facts["exit_code"])
    return ExitCode.INTERRUPTED if facts["interrupted"] else None


def expected(settings: Settings, rehearsal: dict[str, Any] | None) -> dict[str, float]:
    """Each phase's expectation before the window ran: the rehearsal's figure, else the
    runbook's timeline (``orchestrator.eta``); recovery phases as the ETA plans them."""
    plan = eta.estimate(settings, rehearsal)
    restore = rehearsal.get("restore_s") if rehearsal else None
    recovery = {"rollback_banner_off": min(eta.TIMELINE["rollback_banner_off"],
                                           settings.timeout("rollback_banner_off"))}
    if restore is not None:
        recovery["rollback"] = float(restore)
    return {**plan.phases, **recovery}


def _before_only(before: dict[str, Any] | None) -> dict[str, Any]:
    """Baseline entries measured before a migration that never reached its post-check."""
    return dict(before or {})


def _audit_events(path: Path, run_id: str) -> list[dict[str, Any]]:
    """This run's events from the audit log; a line torn by a crash is skipped."""
    if not path.is_file():
        return []
    events = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("run_id") == run_id:
                events.append(event)
    return events


def _who(event: dict[str, Any]) -> dict[str, Any]:
    return {"event": event["event"], "user": event.get("user"), "host": event.get("host"),
            "at": event.get("at"), "command": event.get("cli_command"),
            "state": event.get("state")}


def _check(event: dict[str, Any]) -> dict[str, Any]:
    return {"phase": event.get("phase"), "name": event.get("check"),
            "kind": event.get("kind"), "passed": event["event"] == "check_passed",
            "detail": event.get("detail"), "duration_s": event.get("duration_s"),
            "at": event.get("at")}


# writing ------------------------------------------------------------------------------------


def find_run(journal: Journal, run_id: str | None, state_dir: Path) -> Run:
    runs = journal.runs()
    if not runs:
        raise UsageError(f"no window has run from {state_dir} yet.")
    if run_id is None:
        return runs[0]
    found = next((run for run in runs if run.run_id == run_id), None)
    if found is None:
        raise UsageError(f"no window {run_id} in {state_dir}: `window history` lists them.")
    return found


def write(journal: Journal, run: Run, settings: Settings,
          formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """``reports/<run_id>.<format>``, and the state folder's ``report.<format>`` when ``run``
    is the newest; the paths written."""
    facts = gather(journal, run, settings)
    renderers = {"md": as_markdown.render, "html": as_html.render}
    newest = journal.latest_run()
    written = []
    for fmt in formats:
        text = renderers[fmt](facts)
        name = f"{run.run_id}.{fmt}"
        written.append(_replace(settings.state_dir / "reports" / name, text))
        blobs.shelve(settings, f"reports/{name}", written[-1])  # beside the shared journal
        if newest is not None and newest.run_id == run.run_id:
            written.append(_replace(settings.state_dir / f"report.{fmt}", text))
    return written


def write_after_window(journal: Journal, run_id: str, settings: Settings) -> None:
    """At the end of ``_drive``: a report that cannot be written is a warning, never a
    different outcome for the window."""
    logger = structlog.get_logger()
    try:
        paths = write(journal, journal.run(run_id), settings)
    except Exception as exc:  # a report is a courtesy; the window's end is not
        logger.warning("report_not_written", error=redact(f"{type(exc).__name__}: {exc}"))
        return
    logger.info("report_written", paths=[str(p) for p in paths if p.parent.name != "reports"])


def _replace(path: Path, text: str) -> Path:
    """Whole or not at all: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


# history ------------------------------------------------------------------------------------


def history(journal: Journal, state_dir: Path, limit: int) -> str:
    """One line per run, newest first: outcome, exit code, total and per-phase durations."""
    runs = journal.runs(limit=limit)
    if not runs:
        raise UsageError(f"no window has run from {state_dir} yet.")
    lines = [f"{'run':<22} {'started (UTC)':<19} {'outcome':<24} {'exit':>4} {'total':>9}"
             "  phases"]
    for run in runs:
        code = "-" if run.exit_code is None else str(run.exit_code)
        total = eta.shown(run.finished_at - run.created_at) if run.finished_at else "-"
        lines.append(f"{run.run_id:<22} {clock(run.created_at):<19} {outcome(run):<24}"
                     f" {code:>4} {total:>9}  {_phase_durations(journal, run.run_id)}")
    return redact("\n".join(lines))


def outcome(run: Run) -> str:
    if run.state in TERMINAL:
        return run.state
    if process_alive(run) and not run.interrupted:
        return f"running ({run.state})"
    return f"interrupted ({run.state})"


def _phase_durations(journal: Journal, run_id: str) -> str:
    shown = []
    for phase in journal.phases(run_id):
        if phase.started_at is None:
            continue
        took = eta.shown(phase.finished_at - phase.started_at) if phase.finished_at else "..."
        mark = "" if phase.status == PhaseStatus.SUCCEEDED else f" {phase.status.upper()}"
        shown.append(f"{phase.name} {took}{mark}")
    return ", ".join(shown) or "-"
