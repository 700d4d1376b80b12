from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WINDOW_TOML = """
[window]
name = "light"
confirm_phrase = "LIGHT-OK"

[banner]
on = "true"
off = "true"

[migrate]
command = "true"

[contacts]
on_call = "a"
backup = "b"
db_support = "c"
decision_maker = "d"
"""


def test_help_stays_light() -> None:
    """Answered by orchestrator.cli.light from its stored text (tests/unit/test_light.py)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", "--help"],
                          capture_output=True, text=True, check=False, timeout=30,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0
    for command in ("run", "resume", "abort", "status", "plan", "demo"):
        assert command in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in
                done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"boto3", "botocore", "psycopg", "transitions", "pydantic", "typer",
                           "rich"}


def test_status_stays_light(tmp_path: Path) -> None:
    """``window status`` reads a journal mid-window: no database driver, no logging, no
    engine (the regression this guards: a typed fact that pulled psycopg in)."""
    (tmp_path / "window.toml").write_text(WINDOW_TOML)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", "status"],
                          capture_output=True, text=True, check=False, timeout=30, cwd=tmp_path)
    assert done.returncode == 2, done.stderr  # no window has run here yet
    assert "no window has run" in done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = {name for name in imported
             if name.split(".")[0] in {"psycopg", "structlog", "transitions", "boto3"}
             or name.startswith(("orchestrator.engine.runner", "phases"))}
    assert heavy == set()


def test_unknown_option_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--colour"],
                          capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
