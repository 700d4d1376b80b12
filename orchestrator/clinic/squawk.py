"""squawk (the ``squawk-cli`` package) over the pending migration files, as clinic findings.

squawk knows what locks a statement takes and what a running application notices; the
clinic only maps its JSON report to ``file:line: squawk:<rule>: message``. It needs no
database. It runs once for all files, bounded in time, from the config's folder so that
a project's ``.squawk.toml`` applies as it would on the command line. Its findings are
warnings; ``[lint] errors`` promotes them. Its own parser's ``syntax-error`` is left out:
PostgreSQL's parser (the ``sql-syntax`` rule) is the judge of syntax.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.clinic.findings import Finding
from orchestrator.errors import ConfigError

TIMEOUT_SECONDS = 60.0
SKIPPED_RULES = ("syntax-error",)


def binary() -> Path | None:
    """The squawk installed with this Python (pip puts it beside the interpreter, which a
    venv's users rarely have on PATH), else one on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("squawk")
    return Path(found) if found else None


def run(paths: Sequence[Path], exclude: Sequence[str], *, cwd: Path, folder: Path
        ) -> list[Finding]:
    """squawk's findings on these files; a missing or broken squawk is one warning about
    the migrations ``folder``, never a traceback."""
    if not paths:
        return []
    squawk = binary()
    if squawk is None:
        return [_trouble(folder, "squawk-missing", "the squawk binary is neither beside"
                         f" {sys.executable} nor on PATH (pip install squawk-cli); its rules"
                         " were not run")]
    argv = [str(squawk), "--reporter", "json",
            *([f"--exclude={','.join(exclude)}"] if exclude else []), *map(str, paths)]
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return [_trouble(folder, "squawk-failed",
                         f"squawk did not finish within {TIMEOUT_SECONDS:g}s")]
    except OSError as exc:
        return [_trouble(folder, "squawk-failed", f"squawk cannot run: {exc}")]
    return _report(done, cwd, folder)


def _report(done: subprocess.CompletedProcess[str], cwd: Path, folder: Path
            ) -> list[Finding]:
    problem = _first_line(done.stderr)
    if unknown := re.search(r"invalid rule name (\S+)", done.stderr):
        raise ConfigError(f"[lint] squawk_exclude: {unknown.group(1)!r} is not a squawk rule.")
    try:
        items = json.loads(done.stdout) if done.returncode in (0, 1) else None
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list):
        return [_trouble(folder, "squawk-failed", f"squawk exited {done.returncode}"
                         + (f": {problem}" if problem else ""))]
    return [_finding(item, cwd) for item in items
            if isinstance(item, dict) and item.get("rule_name") not in SKIPPED_RULES]


def _finding(item: dict[str, Any], cwd: Path) -> Finding:
    help_text = f" ({item['help']})" if item.get("help") else ""
    return Finding(cwd / str(item.get("file", "")), int(item.get("line") or 0) + 1,
                   f"squawk:{item.get('rule_name', 'unknown')}",
                   f"{item.get('message', '')}{help_text}", "warning")


def _trouble(folder: Path, rule: str, message: str) -> Finding:
    return Finding(folder, 0, rule, message, "warning")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""
