"""Two real windows that roll back, and the timings they leave in their audit log and journal.

Each window is ``python -m orchestrator run`` on a project folder made by
``orchestrator.demo.write_project``. Its migrate command (``migrate.sh``) applies a harmless
DDL everywhere and fails only on production (``$WINDOW_PHASE`` = ``migrate``), so the staging
rehearsal passes and production rolls back:

- ``swap``: nothing else happens, so the rollback can rename the backup's verified standby copy
  (``<db>_window_<run_id>``) into place;
- ``restore``: the script first drops that standby copy, so the rollback must restore from the
  archive.

The figures are read back by event name from ``<project>/.window/audit.jsonl`` (the backup
and rollback phases' contract); an event that is not there reads as None, never as a crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.commands import demo

WINDOW_TIMEOUT_S = 2 * 3600

TIMEOUTS = ('preflight = "5m"', 'staging_dry_run = "10m"', 'backup = "30m"',
            'migrate = "10m"', 'post_check = "10m"', 'rollback = "30m"')

# Staging is a small copy, so the check asks only that the schema is there.
CHECKS = """
[[checks]]
name = "orders-table-present"
kind = "sql"
query = "SELECT to_regclass('public.orders') IS NOT NULL"
"""

HARMLESS_MIGRATION = """
CREATE TABLE IF NOT EXISTS bench_marker (id int PRIMARY KEY, note text);
"""

FAIL_ON_PRODUCTION = """
if [ "$WINDOW_PHASE" = migrate ]; then
  echo "bench: the migration fails on production, on purpose" >&2
  exit 1
fi
"""

# The maintenance database's URL is production's with the last path segment replaced. The
# migrate command's URL carries the window's timeouts in ``?options=...``: cut off first.
DROP_STANDBY_COPY = """
if [ "$WINDOW_PHASE" = migrate ]; then
  base="${DATABASE_URL%%\\?*}"
  db="${base##*/}"
  psql -X -q -v ON_ERROR_STOP=1 "${base%/*}/postgres" \\
    -c "DROP DATABASE IF EXISTS \\"${db}_window_${WINDOW_RUN_ID}\\" WITH (FORCE)"
fi
"""

APPLY_MIGRATION = 'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"\n'

SCRIPTS = {
    "swap": APPLY_MIGRATION + FAIL_ON_PRODUCTION,
    "restore": DROP_STANDBY_COPY + APPLY_MIGRATION + FAIL_ON_PRODUCTION,
}


@dataclass
class WindowResult:
    """What one window did and how long its steps took; None where a figure is missing."""

    label: str
    exit_code: int | None
    wall_s: float
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: dict[str, float | None] = field(default_factory=dict)
    output_tail: str = ""

    def duration(self, event: str) -> float | None:
        seconds = self.events.get(event, {}).get("duration_s")
        return float(seconds) if isinstance(seconds, int | float) else None

    def value(self, event: str, key: str) -> Any:
        return self.events.get(event, {}).get(key)


def write(folder: Path, rollback: str) -> Path:
    """The project folder for a window that must roll back by ``rollback``; its config path."""
    indent = "\n" + " " * 8  # write_project dedents its template after filling it in
    config = demo.write_project(folder, HARMLESS_MIGRATION, migrate="sh migrate.sh",
                                timeouts=indent.join(TIMEOUTS), checks=CHECKS)
    (folder / "migrate.sh").write_text("#!/bin/sh\nset -eu\n" + SCRIPTS[rollback])
    return config


def run(config: Path, env: dict[str, str], label: str) -> WindowResult:
    """``window run`` to its end; its output goes to ``window.log`` next to the config."""
    log = config.parent / "window.log"
    argv = [sys.executable, "-m", "orchestrator", "run", "--config", str(config),
            "--confirm", demo.PHRASE]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(argv, cwd=config.parent, env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=WINDOW_TIMEOUT_S, check=False)
    wall = time.monotonic() - started
    return WindowResult(label, done.returncode, wall,
                        events=audit_events(config.parent / ".window" / "audit.jsonl"),
                        phases=phase_durations(config, env),
                        output_tail="\n".join(log.read_text().splitlines()[-15:]))


def audit_events(path: Path) -> dict[str, dict[str, Any]]:
    """Each event's last line, by name. Backup events count only from the backup phase: the
    rollback may log an event of the same name while restoring."""
    events: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return events
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = str(event.get("event", ""))
        if name.startswith("backup_") and event.get("phase") not in (None, "backup"):
            continue
        events[name] = event
    return events


def phase_durations(config: Path, env: dict[str, str]) -> dict[str, float | None]:
    """``window status --json``: each phase's duration, in the order the window ran them."""
    done = subprocess.run([sys.executable, "-m", "orchestrator", "status", "--config",
                           str(config), "--json"], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}
    return {p["name"]: p.get("duration_s") for p in report.get("phases", [])
            if p.get("status") not in ("pending", None)}
