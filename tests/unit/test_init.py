"""`window init`: a window.toml that loads and plans, and a workflow GitHub would accept
that fails on a wrong phrase and resumes on a re-run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from orchestrator import __version__, config
from orchestrator.commands.init import detect as init_detect
from orchestrator.commands.init import steps
from tests.support import workflow_steps

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = workflow_steps.WORKFLOW

FLAGS = [(), ("--prisma", "--pnpm", "--workdir", "frontend"), ("--npm",),
         ("--prisma", "--yarn", "--name", "shop-prod", "--phrase", "SHOP-GO")]
# Loopback ports where nothing listens: plan gets as far as the servers, and no further.
ENV = {**os.environ, "DATABASE_URL": "postgresql://app:pw@127.0.0.1:1/shop",
       "DATABASE_URL_STAGING": "postgresql://app:pw@127.0.0.1:1/shop_staging", "NO_COLOR": "1"}


def window(folder: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=folder,
                          env=env or ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def check_jsonschema() -> str:
    found = Path(sys.executable).parent / "check-jsonschema"
    tool = str(found) if found.exists() else shutil.which("check-jsonschema")
    if tool is None:
        pytest.fail("check-jsonschema is needed: pip install -e '.[dev]'")
    return tool


def assert_valid(folder: Path) -> None:
    valid = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                            str(folder / WORKFLOW)], capture_output=True, text=True, check=False)
    assert valid.returncode == 0, valid.stdout + valid.stderr


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
    public = "frontend/public" if "--workdir" in flags else "public"
    assert f"note: {public}/ does not exist: the file banner writes its page there" \
        in done.stdout
    no_page = window(folder, "plan")
    assert no_page.returncode == 3, "a page no web server serves: refused as run would"
    assert f"its folder {folder / public} does not exist" in no_page.stderr
    (folder / public).mkdir(parents=True)
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
    # The phrase, the secrets, and a re-run after exit 1, 3 or 4: failed, never skipped.
    assert workflow.count("exit 1") == 5
    assert "secrets.DATABASE_URL != ''" in workflow
    assert "group: maintenance-window\n  cancel-in-progress: false" in workflow
    assert 'if [ "$ATTEMPT" -gt 1 ] && window status --config window.toml --json' in workflow
    assert "exec window resume --config window.toml" in workflow
    assert 'exec window run --config window.toml --confirm "$CONFIRM"' in workflow
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


# --- A project like our first users': the app in frontend/, Node 20, pnpm, Prisma ---------

NO_DATABASES = {k: v for k, v in ENV.items() if not k.startswith("DATABASE_URL")}


def prisma_project(root: Path, *, nvmrc: str | None = "20\n",
                   package: dict[str, object] | None = None,
                   lockfile: str = "pnpm-lock.yaml") -> Path:
    app = root / "frontend"
    (app / "prisma" / "migrations").mkdir(parents=True)
    (app / "public").mkdir()  # a Next.js app's static files: the file banner's page goes here
    (app / "prisma" / "schema.prisma").write_text(
        'datasource db {\n  provider = "postgresql"\n  url = env("DATABASE_URL")\n}\n')
    (app / "package.json").write_text(json.dumps(package or {
        "name": "shop", "dependencies": {"@prisma/client": "6.1.0", "next": "15.0.0"},
        "devDependencies": {"prisma": "6.1.0"}}))
    if nvmrc is not None:
        (app / ".nvmrc").write_text(nvmrc)
    (app / lockfile).write_text("lockfileVersion: '9.0'\n")
    (root / "README.md").write_text("shop\n")
    return app


def test_init_finds_the_app_its_package_manager_node_and_prisma(tmp_path: Path) -> None:
    prisma_project(tmp_path)

    done = window(tmp_path, "init", "--pg-version", "17")

    assert done.returncode == 0, done.stderr
    assert "found: the app lives in frontend/" in done.stdout
    assert "found: Node 20, from the project" in done.stdout
    settings = config.load(tmp_path / "window.toml")
    assert settings.migrate.workdir == "frontend"
    assert settings.migrate.tool == "prisma"
    assert settings.migrate.command == "pnpm prisma migrate deploy"
    assert settings.migrate.files == "frontend/prisma/migrations"
    check = next(c for c in settings.checks if c.name == "schema-up-to-date")
    assert check.kind == "command" and check.command == "pnpm prisma migrate status"
    assert check.workdir is None, "it runs in [migrate] workdir: frontend"
    setup_node = workflow_steps.step(tmp_path, "Install the project's dependencies")
    assert setup_node["working-directory"] == "frontend"
    assert setup_node["run"] == "pnpm install --frozen-lockfile"
    steps = workflow_steps.load(tmp_path)["jobs"]["window"]["steps"]
    node = next(s for s in steps if s.get("uses") == "actions/setup-node@v4")
    assert node["with"]["node-version"] == "20"
    assert node["with"]["cache"] == "pnpm"
    pnpm = next(s for s in steps if s.get("uses") == "pnpm/action-setup@v4")
    assert pnpm["with"] == {"version": 9}
    assert_valid(tmp_path)


@pytest.mark.parametrize(("files", "package", "manager", "node"), [
    ({".node-version": "v20.11.1\n", "yarn.lock": ""}, None, "yarn", "v20.11.1"),
    ({"package-lock.json": "{}"}, {"engines": {"node": ">=20 <21"},
                                   "devDependencies": {"prisma": "6"}}, "npm", ">=20 <21"),
    ({"pnpm-lock.yaml": ""}, {"packageManager": "pnpm@9.15.0",
                              "dependencies": {"prisma": "6"}}, "pnpm", "lts/*"),
], ids=["node-version-yarn", "engines-npm", "packageManager-pnpm"])
def test_node_and_the_package_manager_come_from_the_project(
        tmp_path: Path, files: dict[str, str], package: dict[str, object] | None,
        manager: str, node: str) -> None:
    app = tmp_path / "web"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(package or {"dependencies": {"prisma": "6"}}))
    for name, text in files.items():
        (app / name).write_text(text)

    done = window(tmp_path, "init", "--pg-version", "16")

    assert done.returncode == 0, done.stderr
    settings = config.load(tmp_path / "window.toml")
    assert settings.migrate.workdir == "web"
    assert settings.migrate.tool == "prisma"
    steps = workflow_steps.load(tmp_path)["jobs"]["window"]["steps"]
    setup = next(s for s in steps if s.get("uses") == "actions/setup-node@v4")
    assert (setup["with"]["node-version"], setup["with"]["cache"]) == (node, manager)
    if manager == "pnpm":
        pnpm = next(s for s in steps if s.get("uses") == "pnpm/action-setup@v4")
        assert pnpm["with"] == {"package_json_file": "web/package.json"}
    assert_valid(tmp_path)


def test_the_postgresql_client_is_the_servers_major_from_postgresqls_repository(
        tmp_path: Path) -> None:
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    window(chosen, "init", "--pg-version", "16")
    default = tmp_path / "default"
    default.mkdir()

    unset = window(default, "init", env=NO_DATABASES)

    assert workflow_steps.load(chosen)["env"]["PG_VERSION"] == "16"
    assert workflow_steps.load(default)["env"]["PG_VERSION"] == "17"
    assert "found: PostgreSQL client 17 (the default; $DATABASE_URL is not set" in unset.stdout
    script = workflow_steps.step(chosen, "Install the PostgreSQL 16 client")["run"]
    assert "https://apt.postgresql.org/pub/repos/apt $VERSION_CODENAME-pgdg main" in script
    assert 'sudo apt-get install -y -q "postgresql-client-$PG_VERSION"' in script
    refused = window(tmp_path, "init", "--pg-version", "7")
    assert refused.returncode == 2 and refused.stderr.startswith("window: --pg-version 7")


@pytest.mark.parametrize("host", ["127.0.0.1:1", "10.255.255.1:5432"],
                         ids=["refused", "unrouted"])
def test_production_that_does_not_answer_gives_the_default_within_three_seconds(
        monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("PROD_DB", f"postgresql://app:pw@{host}/shop")
    started = time.monotonic()

    found = init_detect.server_major("PROD_DB")

    assert time.monotonic() - started <= init_detect.SERVER_SECONDS + 0.5
    assert found == (17, "the default; production ($PROD_DB) did not answer")


def test_init_says_where_the_client_version_came_from(tmp_path: Path) -> None:
    done = window(tmp_path, "init")  # DATABASE_URL: a loopback port where nothing listens

    assert done.returncode == 0, done.stderr
    assert "PostgreSQL client 17 (the default; production ($DATABASE_URL) did not answer" \
        in done.stdout
    assert "pw" not in done.stdout + done.stderr


def test_secret_names_are_configurable_and_clone_mode_needs_no_staging(tmp_path: Path) -> None:
    prisma_project(tmp_path)
    only_production = {**NO_DATABASES,
                       "DATABASE_URL_PROD": "postgresql://app:pw@127.0.0.1:1/shop"}

    done = window(tmp_path, "init", "--production-env", "DATABASE_URL_PROD", "--clone",
                  "--pg-version", "17", env=only_production)

    assert done.returncode == 0, done.stderr
    assert "set the DATABASE_URL_PROD secrets" in done.stdout
    settings = config.load(tmp_path / "window.toml")
    assert settings.target.url_env == "DATABASE_URL_PROD"
    assert (settings.staging.mode, settings.staging.clone_on) == ("clone", "production")
    assert settings.staging.needs_url is False
    text = (tmp_path / WORKFLOW).read_text()
    assert "STAGING" not in text and "secrets.DATABASE_URL_PROD" in text
    assert set(workflow_steps.step(tmp_path, "Run the window")["env"]) == {
        "DATABASE_URL_PROD", "CONFIRM", "ATTEMPT"}
    assert_valid(tmp_path)
    toml = tmp_path / "window.toml"
    toml.write_text(toml.read_text().replace("<name and phone>", "Ann 555-0100")
                    .replace("[target]\n", '[target]\nconnect_timeout = "1s"\n', 1))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    planned = window(tmp_path, "plan", env=only_production)
    assert planned.returncode == 2, planned.stderr
    assert "STAGING" not in planned.stderr, "no staging variable is asked for"
    assert "cannot reach 127.0.0.1:1/" in planned.stderr, planned.stderr


def test_a_named_staging_secret_in_url_or_clone_mode(tmp_path: Path) -> None:
    url, clone = tmp_path / "url", tmp_path / "clone"
    url.mkdir()
    clone.mkdir()
    window(url, "init", "--production-env", "PROD_DB", "--staging-env", "STAGE_DB",
           "--pg-version", "17")
    window(clone, "init", "--staging-env", "STAGE_DB", "--clone", "--pg-version", "17")

    in_url, in_clone = config.load(url / "window.toml"), config.load(clone / "window.toml")

    assert (in_url.staging.url_env, in_url.staging.mode) == ("STAGE_DB", "url")
    assert (in_clone.staging.url_env, in_clone.staging.mode,
            in_clone.staging.clone_on) == ("STAGE_DB", "clone", "staging")
    assert in_clone.staging.needs_url
    assert set(workflow_steps.step(url, "Run the window")["env"]) == {
        "PROD_DB", "STAGE_DB", "CONFIRM", "ATTEMPT"}
    same = window(tmp_path, "init", "--staging-env", "DATABASE_URL", "--pg-version", "17")
    assert same.returncode == 2 and "must differ" in same.stderr
    github = window(tmp_path, "init", "--production-env", "GITHUB_TOKEN")
    assert github.returncode == 2 and "secret GitHub accepts" in github.stderr


def test_the_ssh_banner_takes_its_key_from_a_secret_and_the_http_banner_an_endpoint(
        tmp_path: Path) -> None:
    ssh, http = tmp_path / "ssh", tmp_path / "http"
    ssh.mkdir()
    http.mkdir()
    window(ssh, "init", "--banner", "ssh", "--pg-version", "17")
    window(http, "init", "--banner", "http", "--pg-version", "17")

    over_ssh, over_http = config.load(ssh / "window.toml"), config.load(http / "window.toml")

    assert over_ssh.banner.kind == "command"
    assert isinstance(over_ssh.banner.on, str)
    assert over_ssh.banner.on.startswith("ssh -i ~/.ssh/window_banner -o BatchMode=yes")
    assert '"$BANNER_SSH_TARGET" touch /var/www/maintenance.on' in over_ssh.banner.on
    key = workflow_steps.step(ssh, "Give ssh the banner's key")
    assert key["env"] == {"BANNER_SSH_KEY": "${{ secrets.BANNER_SSH_KEY }}",
                          "BANNER_SSH_KNOWN_HOSTS": "${{ secrets.BANNER_SSH_KNOWN_HOSTS }}"}
    assert "BANNER_SSH_TARGET" in workflow_steps.step(ssh, "Run the window")["env"]
    home = tmp_path / "home"
    written = workflow_steps.run_step(ssh, "Give ssh the banner's key", {
        "BANNER_SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n-----END",
        "BANNER_SSH_KNOWN_HOSTS": "web.example.com ssh-ed25519 AAAA"}, home=home)
    assert written.returncode == 0, written.stderr
    assert (home / ".ssh/window_banner").stat().st_mode & 0o777 == 0o600
    assert (home / ".ssh/known_hosts").read_text() == "web.example.com ssh-ed25519 AAAA\n"
    assert over_http.banner.kind == "http"
    assert over_http.banner.endpoint("on") == "https://example.com/maintenance/on"
    assert_valid(ssh)
    assert_valid(http)


def test_init_keeps_the_state_folder_and_the_backups_out_of_git(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules\n/backups")
    window(tmp_path, "init", "--pg-version", "17")
    window(tmp_path, "init", "--pg-version", "17", "--force")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    window(fresh, "init", "--pg-version", "17")

    lines = (tmp_path / ".gitignore").read_text().splitlines()

    assert lines == ["node_modules", "/backups",
                     "# window: the journal and the backups (customer data)", ".window/"]
    assert (fresh / ".gitignore").read_text().splitlines()[1:] == [".window/", "backups/"]
    subprocess.run(["git", "init", "-q"], cwd=fresh, check=True)
    (fresh / ".window").mkdir()
    (fresh / ".window" / "journal.db").write_text("x")
    (fresh / "backups" / "r1").mkdir(parents=True)
    (fresh / "backups" / "r1" / "toc.dat").write_text("customer data")
    listed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=fresh, capture_output=True, text=True, check=True).stdout
    assert ".window" not in listed and "backups" not in listed
    assert "window.toml" in listed


def test_the_phrase_step_fails_on_a_wrong_phrase_and_passes_the_right_one(
        tmp_path: Path) -> None:
    window(tmp_path, "init", "--phrase", "SHOP-GO", "--pg-version", "17")

    wrong = workflow_steps.run_step(tmp_path, "Check the confirmation phrase",
                                    {"CONFIRM": "shop-go"})
    right = workflow_steps.run_step(tmp_path, "Check the confirmation phrase",
                                    {"CONFIRM": "SHOP-GO"})
    hostile = workflow_steps.run_step(tmp_path, "Check the confirmation phrase",
                                      {"CONFIRM": 'SHOP-GO" ] || touch pwned; [ "'})

    assert wrong.returncode == 1
    assert wrong.stdout == "::error::The confirmation phrase does not match: nothing was run.\n"
    assert right.returncode == 0, right.stdout + right.stderr
    assert hostile.returncode == 1 and not (tmp_path / "pwned").exists()


def test_the_secrets_step_names_every_missing_secret(tmp_path: Path) -> None:
    window(tmp_path, "init", "--production-env", "DATABASE_URL_PROD", "--pg-version", "17")

    missing = workflow_steps.run_step(tmp_path, "Check the secrets exist", {
        "HAS_DATABASE_URL_PROD": "true", "HAS_DATABASE_URL_STAGING": "false"})
    present = workflow_steps.run_step(tmp_path, "Check the secrets exist", {
        "HAS_DATABASE_URL_PROD": "true", "HAS_DATABASE_URL_STAGING": "true"})

    assert missing.returncode == 1
    assert missing.stdout.rstrip().endswith("Actions): DATABASE_URL_STAGING")
    assert present.returncode == 0


def test_the_install_step_installs_exactly_this_tool_pinned(tmp_path: Path) -> None:
    window(tmp_path, "init", "--pg-version", "17")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@" > "$0.args"\n')
    (fake / "python").chmod(0o755)

    done = workflow_steps.run_step(tmp_path, "Install window", {},
                                   path=f"{fake}:/usr/bin:/bin")

    assert done.returncode == 0, done.stderr
    assert (fake / "python.args").read_text() == f"-m pip install pgwindow=={__version__}\n"
    # The pin is this checkout's version, under the name it is distributed by.
    assert importlib.metadata.version("pgwindow") == __version__
    assert importlib.metadata.distribution("pgwindow").entry_points.select(
        group="console_scripts")["window"].value == "orchestrator.cli.light:main"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "pgwindow"
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "orchestrator.__version__"}


def test_a_workspace_pins_pnpm_at_the_root_and_keeps_the_app_two_levels_down(
        tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"packageManager": "pnpm@9.15.0"}))
    (tmp_path / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    app = tmp_path / "apps" / "web"
    (app / "prisma").mkdir(parents=True)
    (app / "prisma" / "schema.prisma").write_text("// schema\n")
    (app / "package.json").write_text(json.dumps({"engines": {"node": "^20.11"}}))
    (tmp_path / "node_modules" / "prisma" / "prisma").mkdir(parents=True)
    (tmp_path / "node_modules" / "prisma" / "prisma" / "schema.prisma").write_text("")

    done = window(tmp_path, "init", "--pg-version", "17")

    assert done.returncode == 0, done.stderr
    assert config.load(tmp_path / "window.toml").migrate.workdir == "apps/web"
    steps = workflow_steps.load(tmp_path)["jobs"]["window"]["steps"]
    pnpm = next(s for s in steps if s.get("uses") == "pnpm/action-setup@v4")
    assert pnpm["with"] == {"package_json_file": "package.json"}
    setup = next(s for s in steps if s.get("uses") == "actions/setup-node@v4")
    assert setup["with"]["node-version"] == "^20.11"
    assert_valid(tmp_path)


FLEET_WORKFLOW = workflow_steps.FLEET_WORKFLOW
S3_STATE = '\n[state]\nbackend = "s3"\nuri = "s3://fleet-state/shop"\n'


def fleet_project(folder: Path, *, state: str = S3_STATE, concurrency: int = 3) -> Path:
    """A project `window init` started, its config's state in S3, and a fleet of four."""
    assert window(folder, "init", "--phrase", "SHOP-GO", "--pg-version", "17").returncode == 0
    with (folder / "window.toml").open("a") as config_file:
        config_file.write(state)
    targets = "".join(f'\n[[targets]]\nname = "{n}"\nurl_env = "{n.upper()}_URL"\n'
                      for n in ("eu", "us", "ap", "sa"))
    (folder / "ops").mkdir()
    (folder / "ops" / "fleet.toml").write_text(
        f'config = "../window.toml"\nconcurrency = {concurrency}\ncanary = "us"\n{targets}')
    return folder / "ops" / "fleet.toml"


def test_init_fleet_asks_the_canarys_server_for_the_client_version(tmp_path: Path) -> None:
    """The targets' URLs come from their own variables: the version is asked of the canary's
    server (here its variable is unset, so the default is taken and the variable named)."""
    fleet_project(tmp_path)

    done = window(tmp_path, "init", "--fleet", "ops/fleet.toml")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "found: PostgreSQL client 17 (the default; $US_URL is not set" in done.stdout, \
        done.stdout

def test_init_fleet_writes_a_valid_workflow_of_targets_canary_and_waves(tmp_path: Path) -> None:
    fleet_project(tmp_path)

    done = window(tmp_path, "init", "--fleet", "ops/fleet.toml", "--pg-version", "16")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "AWS_SECRET_ACCESS_KEY" in done.stdout
    valid = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                            str(tmp_path / FLEET_WORKFLOW)],
                           capture_output=True, text=True, check=False)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    flow = workflow_steps.load(tmp_path, FLEET_WORKFLOW)
    assert list(flow["jobs"]) == ["targets", "canary", "waves"]
    assert flow["env"]["FLEET_FILE"] == "ops/fleet.toml"
    assert flow["env"]["WINDOW_PHRASE"] == "SHOP-GO" and flow["env"]["PG_VERSION"] == "16"
    waves = flow["jobs"]["waves"]
    assert waves["needs"] == ["targets", "canary"]
    assert waves["strategy"]["max-parallel"] == 3 and waves["strategy"]["fail-fast"] is False
    assert waves["strategy"]["matrix"]["target"] == "${{ fromJSON(needs.targets.outputs.waves) }}"
    assert flow["jobs"]["canary"]["needs"] == "targets"
    fleet_run = "${{ needs.targets.outputs.fleet_run }}"  # the targets job opens the fleet run
    assert flow["jobs"]["targets"]["outputs"]["fleet_run"] == "${{ steps.open.outputs.fleet_run }}"
    opening = workflow_steps.step(tmp_path, "Open the fleet run", workflow=FLEET_WORKFLOW,
                                  job="targets")
    assert 'window fleet open "$FLEET_FILE" --confirm "$CONFIRM"' in opening["run"]
    assert opening["env"]["CONFIRM"] == "${{ inputs.confirm }}"
    for job in ("canary", "waves"):  # each runs its target in it, neither opens nor joins one
        placed = workflow_steps.step(tmp_path, "Run the", workflow=FLEET_WORKFLOW, job=job)
        assert placed["env"]["FLEET_RUN"] == fleet_run
        assert "fleet resume \"$FLEET_FILE\" --target \"$TARGET\" --fleet-run" in placed["run"]
    clients = {job: any(s.get("name", "").startswith("Install the PostgreSQL 16 client")
                        for s in flow["jobs"][job]["steps"]) for job in flow["jobs"]}
    assert clients == {"targets": False, "canary": True, "waves": True}  # names need none
    for job in flow["jobs"].values():  # the same phrase gate as the single window's
        gate = job["steps"][0]
        assert gate["name"] == "Check the confirmation phrase"
        assert gate["env"] == {"CONFIRM": "${{ inputs.confirm }}"}
        assert "${{" not in "".join(s.get("run", "") for s in job["steps"])  # through env
    secrets = set(workflow_steps.step(tmp_path, "Run the target's window",
                                      workflow=FLEET_WORKFLOW, job="waves")["env"])
    assert secrets == {"EU_URL", "US_URL", "AP_URL", "SA_URL", "DATABASE_URL_STAGING",
                       "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TARGET", "FLEET_RUN"}


def test_init_fleet_refuses_a_local_state_and_a_fleet_file_outside(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    fleet_project(local, state="")
    outside = tmp_path / "outside"
    outside.mkdir()

    refused = window(local, "init", "--fleet", "ops/fleet.toml")
    elsewhere = window(outside, "init", "--fleet", str(local / "ops" / "fleet.toml"))

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert '[state] backend = "s3"' in refused.stderr and "Traceback" not in refused.stderr
    assert elsewhere.returncode == 2 and "inside this folder" in elsewhere.stderr
    assert not (local / FLEET_WORKFLOW).exists() and not (outside / FLEET_WORKFLOW).exists()


def test_fleet_plan_names_the_targets_canary_and_waves_never_a_url(tmp_path: Path) -> None:
    fleet_project(tmp_path, concurrency=2)
    env = {**ENV, **{f"{n}_URL": f"postgresql://app:s3cret@127.0.0.1:1/{n}"
                     for n in ("EU", "US", "AP", "SA")}}

    shown = window(tmp_path, "fleet", "plan", "ops/fleet.toml", env=env)
    as_json = window(tmp_path, "fleet", "plan", "ops/fleet.toml", "--json", env=env)

    assert shown.returncode == 0 and as_json.returncode == 0, shown.stderr + as_json.stderr
    assert "wave 0: us (the canary)\n  wave 1: eu, ap\n  wave 2: sa" in shown.stdout
    facts = json.loads(as_json.stdout)
    assert facts["canary"] == "us" and facts["waves"] == [["us"], ["eu", "ap"], ["sa"]]
    assert facts["targets"] == ["eu", "us", "ap", "sa"] and facts["concurrency"] == 2
    assert "s3cret" not in shown.stdout + as_json.stdout + shown.stderr + as_json.stderr


def test_the_pin_is_the_commit_a_git_install_came_from_else_the_version() -> None:
    """PEP 610's direct_url.json says how pip installed this copy: from a git repository a
    runner can reach, the workflow installs that very commit; from the package index or a
    local checkout (which no runner has), the version."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    from_git = json.dumps({"url": "https://github.com/acme/window",
                           "vcs_info": {"vcs": "git", "commit_id": commit}})
    local = json.dumps({"url": "file:///home/ann/window", "dir_info": {"editable": True}})
    local_git = json.dumps({"url": "file:///home/ann/window",
                            "vcs_info": {"vcs": "git", "commit_id": commit}})

    assert steps.pinned("0.1.0", from_git) == \
        f"pgwindow @ git+https://github.com/acme/window@{commit}"
    assert steps.pinned("0.1.0", None) == "pgwindow==0.1.0"
    assert steps.pinned("0.1.0", local) == "pgwindow==0.1.0"
    assert steps.pinned("0.1.0", local_git) == "pgwindow==0.1.0"
    assert steps.pinned("0.1.0", "{not json") == "pgwindow==0.1.0"
