"""The layers of DESIGN.md are enforced: import-linter passes on the tree as it is, and fails
on a copy where a phase imports the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for folder in ("orchestrator", "phases"):
        shutil.copytree(ROOT / folder, tree / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    done = lint_imports(copy_of_the_tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "wrong", "contract"), [
    ("migrate", "from orchestrator.cli import app", "Phases never import the command line"),
    ("banner", "from phases import migrate", "A phase never imports another phase"),
    ("rollback", "from orchestrator.commands import window", "Layers, top to bottom"),
])
def test_a_wrong_import_breaks_the_contracts(tmp_path: Path, module: str, wrong: str,
                                             contract: str) -> None:
    tree = copy_of_the_tree(tmp_path)
    phase = tree / "phases" / f"{module}.py"
    phase.write_text(phase.read_text() + f"\n{wrong}  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert f"phases.{module} -> " in done.stdout
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout
