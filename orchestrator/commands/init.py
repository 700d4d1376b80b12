"""``window init``: a first window.toml and the GitHub Actions workflow that runs it.

The workflow is where a window's safety is easiest to lose: a dispatch that silently skips on
a mistyped phrase looks green, two dispatches race for one database, and a re-run of a failed
job that starts a NEW window would take a second backup of a half-migrated database. So the
job fails on a wrong phrase, runs one at a time, and a re-run resumes from the journal of the
attempt before it (uploaded as an artifact, like the report).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.errors import UsageError

CONFIG = Path("window.toml")
WORKFLOW = Path(".github/workflows/maintenance-window.yml")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SAFE_DIR = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
PackageManager = Literal["pnpm", "npm", "yarn"]
_RUNNER = {"pnpm": "pnpm", "npm": "npx", "yarn": "yarn"}
_INSTALL = {"pnpm": "pnpm install --frozen-lockfile", "npm": "npm ci",
            "yarn": "yarn install --frozen-lockfile"}


@dataclass(frozen=True)
class Options:
    name: str
    phrase: str
    prisma: bool = False
    package_manager: PackageManager | None = None
    workdir: str | None = None

    def __post_init__(self) -> None:
        for key, value in (("--name", self.name), ("--phrase", self.phrase)):
            if not _SAFE.fullmatch(value):
                raise UsageError(f"{key} {value!r} may hold only letters, digits, '.', '_'"
                                 " and '-' (it goes into TOML, YAML and a shell).")
        if self.workdir is not None and (not _SAFE_DIR.fullmatch(self.workdir)
                                         or ".." in self.workdir.split("/")):
            raise UsageError(f"--workdir {self.workdir!r} must be a plain relative folder"
                             " such as frontend or apps/web.")

    def inside(self, path: str) -> str:
        """A path of the project, from the repository root (where window.toml lives)."""
        return f"{self.workdir}/{path}" if self.workdir else path


def default_name(folder: Path) -> str:
    """The folder's name as a window name: "shop" -> "shop-prod"."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-._")
            or "app") + "-prod"


def default_phrase(name: str) -> str:
    return f"{name.upper()}-OK"


def write(folder: Path, options: Options, *, force: bool = False) -> list[Path]:
    """Both files, or neither: nothing is overwritten without ``force``."""
    paths = [folder / CONFIG, folder / WORKFLOW]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; pass --force to overwrite it.")
    paths[1].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(window_toml(options), encoding="utf-8")
    paths[1].write_text(workflow(options), encoding="utf-8")
    return paths


def _migrate_section(options: Options) -> str:
    runner = _RUNNER[options.package_manager or "npm"]
    workdir = f'workdir = "{options.workdir}"' if options.workdir else '# workdir = "frontend"'
    if options.prisma:
        return textwrap.dedent(f"""\
            [migrate]
            command = "{runner} prisma migrate deploy"  # staging first, then production
            {workdir}
            tool = "prisma"                      # the window reads _prisma_migrations
            files = "{options.inside('prisma/migrations')}"   # nothing pending: `run` exits 0
            # lock_timeout = "5s"                # fail fast behind a lock, never queue users
            """)
    command = f"{runner} run migrate" if options.package_manager else "./scripts/migrate.sh"
    return textwrap.dedent(f"""\
        [migrate]
        command = "{command}"   # must apply only what is pending: staging, then production
        {workdir}
        tool = "none"                        # "prisma" | "alembic" | "flyway": reads its table
        # files = "migrations"
        """)


def _checks(options: Options) -> str:
    runner = _RUNNER[options.package_manager or "npm"]
    prisma = textwrap.dedent(f"""
        [[checks]]
        name = "schema-up-to-date"
        kind = "command"                     # passes on exit 0 and the expected output
        command = "{runner} prisma migrate status"
        expect_output = "Database schema is up to date!"
        """) if options.prisma else ""
    return prisma + textwrap.dedent("""
        [[checks]]
        name = "database-answers"
        kind = "sql"                         # passes when the first value is true
        query = "SELECT true"

        # [[checks]]
        # name = "health"
        # kind = "http"                      # retried until its timeout; reads the body too
        # url = "https://example.com/api/healthz"
        # expect_status = 200
        """)


def window_toml(options: Options) -> str:
    return textwrap.dedent(f"""\
        # The maintenance window `window run` carries out (see `window plan`).
        # Paths are relative to this file's folder. Written by `window init`.

        [window]
        name = "{options.name}"
        confirm_phrase = "{options.phrase}"  # typed (or passed with --confirm) to start
        # state_dir = ".window"              # journal, audit log and report.md / report.html
        # length = "45m"                     # the announced window; default: the timeouts

        [contacts]                           # `plan` and `run` refuse until these are real
        on_call = "<name and phone>"
        backup = "<name and phone>"
        db_support = "<name and phone>"
        decision_maker = "<name and phone>"

        [target]
        url_env = "DATABASE_URL"             # production, from the environment only

        [staging]
        url_env = "DATABASE_URL_STAGING"     # the migration is rehearsed here first
        # mode = "clone"                     # rehearse on a fresh copy of production instead

        [backup]
        dir = "backups"                      # pg_dump -Fd, proven by a restore
        jobs = 2
        # s3_uri = "s3://bucket/windows"     # keep it off the machine (CI runners vanish)

        [banner]
        kind = "file"                        # "command" | "file" | "http"
        path = "{options.inside('public/maintenance.html')}"   # the page the web server looks for
        message = "We are upgrading our database and will be back shortly."
        # template = "maintenance.template.html"   # HTML with $message and $ends_at
        # kind = "command"
        # on = "php artisan down --retry=60"
        # off = "php artisan up"
        # kind = "http"
        # on_url = "https://api.example.com/maintenance/on"
        # off_url = "https://api.example.com/maintenance/off"
        # headers = {{ Authorization = "Bearer ..." }}   # redacted from every output

        """) + _migrate_section(options) + textwrap.dedent("""
        [timeouts]          # seconds, or "90s", "10m", "1h"; defaults: the runbook's timeline
        # staging_dry_run = "15m"
        # backup = "10m"
        # migrate = "5m"
        # post_check = "5m"
        # rollback = "10m"
        """) + _checks(options)


def _node_steps(options: Options) -> str:
    manager = options.package_manager
    if manager is None:
        return ""
    where = f"\n          working-directory: {options.workdir}" if options.workdir else ""
    pnpm = "      - uses: pnpm/action-setup@v4\n" + (
        f"        with:\n          package_json_file: {options.workdir}/package.json\n"
        if options.workdir else "") if manager == "pnpm" else ""
    return pnpm + textwrap.indent(textwrap.dedent(f"""\
        - uses: actions/setup-node@v4
          with:
            node-version: 22
            cache: {manager}{f'''
            cache-dependency-path: {options.workdir}/**/*lock*''' if options.workdir else ''}
        - name: Install the project's dependencies
          run: {_INSTALL[manager]}{where}
        """), "      ")


def workflow(options: Options) -> str:
    return textwrap.dedent(f"""\
        # Runs the maintenance window {options.name!r} by hand: Actions > Maintenance window >
        # Run workflow, typing the confirmation phrase. Re-running a failed job resumes the
        # window from the journal of the attempt before it; it never starts a second one.
        # Written by `window init`.
        name: Maintenance window

        on:
          workflow_dispatch:
            inputs:
              confirm:
                description: Type {options.phrase} to run the window against production
                required: true
                type: string

        concurrency:
          group: maintenance-window
          cancel-in-progress: false

        permissions:
          contents: read
          actions: read

        env:
          WINDOW_PHRASE: {options.phrase}
          WINDOW_PACKAGE: window   # the pip requirement that installs the window CLI

        jobs:
          window:
            runs-on: ubuntu-latest
            timeout-minutes: 120
            environment: production
            steps:
              - name: Check the confirmation phrase
                env:
                  CONFIRM: ${{{{ inputs.confirm }}}}
                run: |
                  if [ "$CONFIRM" != "$WINDOW_PHRASE" ]; then
                    echo "::error::The confirmation phrase does not match: nothing was run."
                    exit 1
                  fi
              - name: Check the database secrets exist
                env:
                  HAS_PRODUCTION: ${{{{ secrets.DATABASE_URL != '' }}}}
                  HAS_STAGING: ${{{{ secrets.DATABASE_URL_STAGING != '' }}}}
                run: |
                  if [ "$HAS_PRODUCTION" != true ] || [ "$HAS_STAGING" != true ]; then
                    echo "::error::Set the DATABASE_URL and DATABASE_URL_STAGING secrets."
                    exit 1
                  fi
              - uses: actions/checkout@v4
              - uses: actions/setup-python@v5
                with:
                  python-version: "3.12"
              - name: Install window and the PostgreSQL client tools
                run: |
                  sudo apt-get update -q && sudo apt-get install -y -q postgresql-client
                  python -m pip install "$WINDOW_PACKAGE"
        """) + _node_steps(options) + textwrap.indent(textwrap.dedent(f"""\
              - name: Name the attempt before this one
                id: previous
                if: github.run_attempt > 1
                run: echo "attempt=$(( ${{{{ github.run_attempt }}}} - 1 ))" >> "$GITHUB_OUTPUT"
              - name: Fetch the journal of the failed attempt
                if: github.run_attempt > 1
                uses: actions/download-artifact@v4
                with:
                  name: window-state-${{{{ steps.previous.outputs.attempt }}}}
                  path: .window/
                  run-id: ${{{{ github.run_id }}}}
                  github-token: ${{{{ github.token }}}}
              - name: Run the window (a re-run resumes it)
                env:
                  DATABASE_URL: ${{{{ secrets.DATABASE_URL }}}}
                  DATABASE_URL_STAGING: ${{{{ secrets.DATABASE_URL_STAGING }}}}
                  CONFIRM: ${{{{ inputs.confirm }}}}
                  ATTEMPT: ${{{{ github.run_attempt }}}}
                run: |
                  if [ "$ATTEMPT" -gt 1 ]; then
                    window resume --config {CONFIG}
                  else
                    window run --config {CONFIG} --confirm "$CONFIRM"
                  fi
              - name: Keep the state folder (journal, audit log)
                if: always()
                uses: actions/upload-artifact@v4
                with:
                  name: window-state-${{{{ github.run_attempt }}}}
                  path: .window/
                  include-hidden-files: true
                  if-no-files-found: warn
              - name: Keep the report
                if: always()
                uses: actions/upload-artifact@v4
                with:
                  name: window-report-${{{{ github.run_attempt }}}}
                  path: |
                    .window/report.md
                    .window/report.html
                  if-no-files-found: ignore
        """), "      ")
