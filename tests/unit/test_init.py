"""`window init`: a window.toml that loads and plans, and a workflow GitHub would accept
that fails on a wrong phrase and resumes on a re-run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import config

FLAGS = [(), ("--prisma", "--pnpm", "--workdir", "frontend"), ("--npm",),
         ("--prisma", "--yarn", "--name", "shop-prod", "--phrase", "SHOP-GO")]
# Loopback ports where nothing listens: plan gets as far as the servers, and no further.
ENV = {**os.environ, "DATABASE_URL": "postgresql://app:pw@127.0.0.1:1/shop",
       "DATABASE_URL_STAGING": "postgresql://app:pw@127.0.0.1:1/shop_staging", "NO_COLOR": "1"}


def window(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=folder, env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def check_jsonschema() -> str:
    found = Path(sys.executable).parent / "check-jsonschema"
    tool = str(found) if found.exists() else shutil.which("check-jsonschema")
    if tool is None:
        pytest.fail("check-jsonschema is needed: pip install -e '.[dev]'")
    return tool


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: " ".join(f) or "bare")
def test_init_writes_a_config_that_plans_and_a_valid_workflow(tmp_path: Path,
                                                              flags: tuple[str, ...]) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()

    done = window(folder, "init", *flags)

    assert done.returncode == 0, done.stderr
    workflow = folder / ".github/workflows/maintenance-window.yml"
    valid = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                            str(workflow)], capture_output=True, text=True, check=False)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    settings = config.load(folder / "window.toml")
    assert settings.banner.kind == "file"
    refused = window(folder, "plan")
    assert refused.returncode == 2, "nobody to call yet: plan must say so"
    assert "[contacts] on_call" in refused.stderr
    toml = folder / "window.toml"
    toml.write_text(toml.read_text().replace("<name and phone>", "Ann 555-0100")
                    .replace("[target]\n", '[target]\nconnect_timeout = "1s"\n', 1))
    planned = window(folder, "plan")
    # Past every check of the config and its contacts, plan asks the servers (none here).
    assert planned.returncode == 2, planned.stderr
    assert "cannot reach 127.0.0.1:1/" in planned.stderr, planned.stderr


def test_prisma_pnpm_workdir_tune_the_config(tmp_path: Path) -> None:
    window(tmp_path, "init", "--prisma", "--pnpm", "--workdir", "frontend", "--phrase", "GO-1")

    settings = config.load(tmp_path / "window.toml")

    assert settings.migrate.command == "pnpm prisma migrate deploy"
    assert settings.migrate.workdir == "frontend"
    assert settings.migrate.tool == "prisma"
    assert settings.migrate.files == "frontend/prisma/migrations"
    assert settings.window.confirm_phrase == "GO-1"
    assert settings.banner.path == "frontend/public/maintenance.html"
    workflow = (tmp_path / ".github/workflows/maintenance-window.yml").read_text()
    assert "pnpm install --frozen-lockfile" in workflow
    assert "working-directory: frontend" in workflow


def test_the_workflow_fails_on_a_wrong_phrase_and_resumes_on_a_rerun(tmp_path: Path) -> None:
    window(tmp_path, "init", "--phrase", "SHOP-GO")

    workflow = (tmp_path / ".github/workflows/maintenance-window.yml").read_text()

    assert "workflow_dispatch:" in workflow and "confirm:" in workflow
    assert 'if [ "$CONFIRM" != "$WINDOW_PHRASE" ]; then' in workflow
    assert "WINDOW_PHRASE: SHOP-GO" in workflow
    assert workflow.count("exit 1") == 2  # the phrase, the secrets: failed, never skipped
    assert "secrets.DATABASE_URL != ''" in workflow
    assert "group: maintenance-window\n  cancel-in-progress: false" in workflow
    assert 'if [ "$ATTEMPT" -gt 1 ]; then\n' in workflow
    assert "window resume --config window.toml" in workflow
    assert 'window run --config window.toml --confirm "$CONFIRM"' in workflow
    assert workflow.count("if: always()") == 2
    assert workflow.count("uses: actions/upload-artifact@v4") == 2
    assert "path: .window/" in workflow


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "window.toml").write_text("# mine\n")

    refused = window(tmp_path, "init")

    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"window: {tmp_path}/window.toml already exists;"
                                      " pass --force to overwrite it.")
    assert (tmp_path / "window.toml").read_text() == "# mine\n"
    assert not (tmp_path / ".github").exists(), "both files or neither"
    forced = window(tmp_path, "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "confirm_phrase" in (tmp_path / "window.toml").read_text()


@pytest.mark.parametrize("args", [("--phrase", "GO; rm -rf /"), ("--workdir", "../elsewhere"),
                                  ("--pnpm", "--npm")])
def test_init_refuses_bad_options_in_one_sentence(tmp_path: Path, args: tuple[str, ...]) -> None:
    refused = window(tmp_path, "init", *args)

    assert refused.returncode == 2
    assert refused.stderr.startswith("window: ")
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "window.toml").exists()
