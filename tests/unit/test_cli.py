from __future__ import annotations

import subprocess
import sys


def test_help_stays_light() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", "--help"],
                          capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 0
    for command in ("run", "resume", "abort", "status", "plan", "demo"):
        assert command in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in
                done.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in imported
    assert not imported & {"boto3", "botocore", "psycopg", "transitions", "pydantic"}


def test_unknown_option_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--colour"],
                          capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
