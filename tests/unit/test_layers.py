"""The layers of DESIGN.md are enforced: import-linter passes on the tree as it is, and fails
on a copy where a phase imports the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_a_phase_importing_the_command_line_breaks_the_contracts(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    migrate = tree / "phases" / "migrate.py"
    migrate.write_text(migrate.read_text() + "\nfrom orchestrator.cli import app  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "phases.migrate -> orchestrator.cli.app" in done.stdout
    assert "Phases never import the command line BROKEN" in done.stdout


def test_a_phase_importing_another_phase_breaks_the_contracts(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    banner = tree / "phases" / "banner.py"
    banner.write_text(banner.read_text() + "\nfrom phases import migrate  # noqa\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "A phase never imports another phase BROKEN" in done.stdout
