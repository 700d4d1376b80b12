"""The GitHub Actions workflow ``window init`` writes.

The workflow is where a window's safety is easiest to lose: a dispatch that silently skips on
a mistyped phrase looks green, two dispatches race for one database, and a re-run of a failed
job that starts a NEW window would take a second backup of a half-migrated database. So the
job fails on a wrong phrase, runs one at a time, and a re-run resumes from the journal of the
attempt before it (uploaded as an artifact, like the report), or says what to do instead.
"""

from __future__ import annotations

import importlib.metadata
import textwrap

from orchestrator import __version__
from orchestrator.commands.init import steps
from orchestrator.commands.init.options import INSTALL, SSH_SECRETS, Options

WORKFLOW = ".github/workflows/maintenance-window.yml"
STEP_INDENT = " " * 6


def _secret(name: str) -> str:
    return f"${{{{ secrets.{name} }}}}"


def _script(name: str, run: str, env: dict[str, str] | None = None) -> str:
    """A step running ``run`` (a shell script) with ``env``, at column 0."""
    lines = [f"- name: {name}"]
    if env:
        lines += ["  env:", *(f"    {key}: {value}" for key, value in env.items())]
    lines += ["  run: |", textwrap.indent(run, "    ").rstrip("\n")]
    return "\n".join(lines) + "\n"


def _header(options: Options) -> str:
    return textwrap.dedent(f"""\
        # Runs the maintenance window {options.name!r} by hand: Actions > Maintenance window >
        # Run workflow, typing the confirmation phrase. Re-running a failed job resumes an
        # interrupted window from the journal of the attempt before it; after a rollback, a
        # refusal or a needed hand it says what to do instead. Written by `window init`.
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
          PG_VERSION: "{options.pg_version}"   # production's major version: its client tools

        jobs:
          window:
            runs-on: ubuntu-latest
            timeout-minutes: 120
            environment: production
            steps:
        """)


def _setup(options: Options, secrets: list[str] | None = None) -> list[str]:
    """The phrase, the secrets, Python, the PostgreSQL client and window: every job's start."""
    secrets = options.secrets if secrets is None else secrets
    has = {steps.has_variable(name): f"${{{{ secrets.{name} != '' }}}}" for name in secrets}
    return [
        _script("Check the confirmation phrase", steps.PHRASE,
                {"CONFIRM": "${{ inputs.confirm }}"}),
        _script("Check the secrets exist", steps.secrets_check(secrets), has),
        "- uses: actions/checkout@v4\n",
        '- uses: actions/setup-python@v5\n  with:\n    python-version: "3.12"\n',
        _script(f"Install the PostgreSQL {options.pg_version} client (from PostgreSQL's"
                " apt repository)", steps.postgres_client()),
        _script(f"Install window {__version__} (the pgwindow distribution, pinned)",
                steps.install_window(steps.pinned(__version__, _direct_url()))),
    ]


def _direct_url() -> str | None:
    """How pip installed this copy (PEP 610), if it says."""
    try:
        return importlib.metadata.distribution("pgwindow").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None


def _node(options: Options) -> list[str]:
    manager = options.package_manager
    if manager is None:
        return []
    found = []
    if manager == "pnpm":
        found.append("- uses: pnpm/action-setup@v4\n  with:\n" + (
            f"    package_json_file: {options.pinned_manager}\n"
            if options.pinned_manager else
            '    version: 9   # or name it in package.json "packageManager"\n'))
    node = (f'"{options.node_version}"' if options.node_version
            else '"lts/*"   # pin it in an .nvmrc, then run window init again')
    cache = (f"\n    cache-dependency-path: {options.inside('*lock*')}"
             if options.workdir else "")
    found.append(f"- uses: actions/setup-node@v4\n  with:\n    node-version: {node}\n"
                 f"    cache: {manager}{cache}\n")
    where = f"\n  working-directory: {options.workdir}" if options.workdir else ""
    found.append(f"- name: Install the project's dependencies\n  run: {INSTALL[manager]}"
                 f"{where}\n")
    return found


def _ssh(options: Options) -> list[str]:
    if options.banner != "ssh":
        return []
    key, known_hosts, _ = SSH_SECRETS
    return [_script("Give ssh the banner's key and the web server's host key", steps.SSH_KEY,
                    {key: _secret(key), known_hosts: _secret(known_hosts)})]


def _window(options: Options) -> list[str]:
    names = [options.production_env]
    if options.staging_variable:
        names.append(options.staging_variable)
    if options.banner == "ssh":
        names.append(SSH_SECRETS[2])
    env = {name: _secret(name) for name in names}
    env |= {"CONFIRM": "${{ inputs.confirm }}", "ATTEMPT": "${{ github.run_attempt }}"}
    return [
        textwrap.dedent("""\
            - name: Name the attempt before this one
              id: previous
              if: github.run_attempt > 1
              run: echo "attempt=$(( ${{ github.run_attempt }} - 1 ))" >> "$GITHUB_OUTPUT"
            - name: Fetch the journal of the failed attempt
              if: github.run_attempt > 1
              continue-on-error: true   # that attempt may have stopped before a window started
              uses: actions/download-artifact@v4
              with:
                name: window-state-${{ steps.previous.outputs.attempt }}
                path: .window/
                run-id: ${{ github.run_id }}
                github-token: ${{ github.token }}
            """),
        _script("Run the window (a re-run resumes an interrupted one)", steps.run_window(), env),
        textwrap.dedent("""\
            - name: Keep the state folder (journal, audit log)
              if: always()
              uses: actions/upload-artifact@v4
              with:
                name: window-state-${{ github.run_attempt }}
                path: .window/
                include-hidden-files: true
                if-no-files-found: warn
            - name: Keep the report
              if: always()
              uses: actions/upload-artifact@v4
              with:
                name: window-report-${{ github.run_attempt }}
                path: |
                  .window/report.md
                  .window/report.html
                if-no-files-found: ignore
            """),
    ]


def workflow(options: Options) -> str:
    parts = [*_setup(options), *_node(options), *_ssh(options), *_window(options)]
    return _header(options) + "".join(textwrap.indent(part, STEP_INDENT) for part in parts)
