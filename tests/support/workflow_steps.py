"""The steps of the workflow `window init` writes, run with bash as a GitHub runner would:
each step's ``run`` script with its ``env`` (the ``${{ }}`` values given by the test) and the
workflow's own ``env``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

WORKFLOW = Path(".github/workflows/maintenance-window.yml")


FLEET_WORKFLOW = Path(".github/workflows/fleet-window.yml")


def load(folder: Path, workflow: Path = WORKFLOW) -> dict[str, Any]:
    return YAML(typ="safe").load((folder / workflow).read_text())  # type: ignore[no-any-return]


def step(folder: Path, name: str, *, workflow: Path = WORKFLOW, job: str = "window"
         ) -> dict[str, Any]:
    """The step of ``job`` whose name starts with ``name``."""
    found = [s for s in load(folder, workflow)["jobs"][job]["steps"]
             if s.get("name", "").startswith(name)]
    assert len(found) == 1, f"one step named {name!r}: {found}"
    return found[0]  # type: ignore[no-any-return]


def run_step(folder: Path, name: str, given: dict[str, str], *, path: str | None = None,
             home: Path | None = None, base: dict[str, str] | None = None,
             timeout: float = 240, workflow: Path = WORKFLOW, job: str = "window"
             ) -> subprocess.CompletedProcess[str]:
    """Run the step's script in ``folder`` with bash; ``given`` replaces every ``${{ }}``
    value of its env (a value not given is refused: the test must say what GitHub passes);
    the environment is ``base`` (default: this process's) with the workflow's own env."""
    loaded, found = load(folder, workflow), step(folder, name, workflow=workflow, job=job)
    env = dict(os.environ if base is None else base)
    for key, value in [*loaded.get("env", {}).items(), *(found.get("env") or {}).items()]:
        if isinstance(value, str) and "${{" in value:
            assert key in given, f"the test must give {key} ({value})"
            env[key] = given[key]
        else:
            env[key] = str(value)
    if home is not None:
        env["HOME"] = str(home)
    env["PATH"] = path or f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # How GitHub runs a step's `run` on Linux: bash --noprofile --norc -eo pipefail {0}
    argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", found["run"]]
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
