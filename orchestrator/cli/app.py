"""The command line: parse, call a plain function, map the project's error to an exit code.

Heavy imports (psycopg, the phases) happen inside the commands, so ``window --help`` stays
light. ``pretty_exceptions_show_locals`` is off: locals hold database URLs.
"""

from __future__ import annotations

import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from orchestrator.cli import direct, fleet
from orchestrator.cli.options import (
    APP_SETTINGS,
    ConfigOption,
    ConfirmOption,
    JsonLogsOption,
    TargetOption,
    whole_sentences,
)
from orchestrator.errors import UsageError, WindowError

app = typer.Typer(
    name="window",
    help="Run a production PostgreSQL maintenance window as a durable state machine.",
    **APP_SETTINGS,
)


def _version(shown: bool) -> None:
    if shown:
        from orchestrator import __version__

        typer.echo(f"window {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    _version_shown: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version, help="Show the version and exit.")
    ] = False,
) -> None:
    """The options before the command (``--version``); ``light`` answers it without typer."""


_settings = direct.settings


def _exit(code: int) -> NoReturn:
    raise typer.Exit(code)


@app.command()
def run(  # every option is a flag: keyword-only
    *,
    config: ConfigOption = Path("window.toml"),
    confirm: ConfirmOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Run even when the migration tool shows nothing pending.")] = False,
    skip_staging: Annotated[bool, typer.Option(
        "--skip-staging",
        help="Skip the rehearsal (also needs [staging] skip = true); recorded as a risk.")
    ] = False,
    json_logs: JsonLogsOption = False,
    target: TargetOption = None,
    fleet_run: Annotated[str | None, typer.Option(
        "--fleet-run", hidden=True,
        help="Claim the target for this fleet run: a window it already has is not run again.")
    ] = None,
) -> None:
    """Pass the safety gates, then run the whole window."""
    _exit(direct.run(config=config, confirm=confirm, force=force, skip_staging=skip_staging,
                     json_logs=json_logs, target=target, fleet_run=fleet_run))


@app.command()
def rehearse(config: ConfigOption = Path("window.toml"),
             json_logs: JsonLogsOption = False) -> None:
    """Run preflight and the staging rehearsal alone; `run` reuses a recent success."""
    from orchestrator.commands import window

    _exit(window.rehearse(_settings(config, json_logs=json_logs)))


@app.command()
def resume(config: ConfigOption = Path("window.toml"),
           json_logs: JsonLogsOption = False, target: TargetOption = None) -> None:
    """Continue the last unfinished window from its journal."""
    from orchestrator.commands import window

    _exit(window.resume(_settings(config, json_logs=json_logs, target=target)))


@app.command()
def abort(
    config: ConfigOption = Path("window.toml"),
    confirm: ConfirmOption = None,
    accept_data_loss: Annotated[bool, typer.Option(
        "--accept-data-loss",
        help="Restore a rollback that paused on writes made after the backup.")] = False,
    json_logs: JsonLogsOption = False,
    target: TargetOption = None,
) -> None:
    """Roll the running (or crashed) window back; before the banner, just stop it."""
    from orchestrator.commands import abort

    _exit(abort.abort(_settings(config, json_logs=json_logs, target=target), confirm,
                         accept_data_loss=accept_data_loss))


@app.command()
def unlock(
    config: ConfigOption = Path("window.toml"),
    confirm: ConfirmOption = None,
    json_logs: JsonLogsOption = False,
    target: TargetOption = None,
) -> None:
    """Break the S3 state's lease when its runner is gone for sure (audited)."""
    from orchestrator.commands import abort

    _exit(abort.unlock(_settings(config, json_logs=json_logs, target=target), confirm))


@app.command()
def status(
    config: ConfigOption = Path("window.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    target: TargetOption = None,
) -> None:
    """Where the window stands, phase by phase; works while a run is in progress."""
    from orchestrator.reporting import status  # not commands: status must start fast mid-window

    # Logging (structlog, ~0.1 s to import) only where status may log: the S3 state's reads.
    settings = _settings(config, target=target, logs=False)
    if settings.state.backend == "s3":
        from orchestrator import log

        log.configure()
    typer.echo(status.show(settings, as_json))


class ReportFormat(StrEnum):
    MD = "md"
    HTML = "html"


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(
        help="A run from `window history`; the newest by default.")] = None,
    config: ConfigOption = Path("window.toml"),
    fmt: Annotated[ReportFormat | None, typer.Option(
        "--format", help="Only this format; both by default.")] = None,
) -> None:
    """Write a window's report.md and report.html again; print their paths."""
    from orchestrator.commands import records

    formats = (fmt.value,) if fmt else tuple(f.value for f in ReportFormat)
    paths = records.write_reports(_settings(config), run_id, formats)
    typer.echo("\n".join(str(path) for path in paths))


@app.command()
def history(
    config: ConfigOption = Path("window.toml"),
    # SQLite takes a 64-bit LIMIT: a larger N is a usage error, not an OverflowError.
    limit: Annotated[int, typer.Option(min=1, max=1_000_000,
                                       help="Show the newest N runs.")] = 20,
) -> None:
    """Past windows, newest first: outcome, exit code, total and per-phase durations."""
    from orchestrator.commands import records

    typer.echo(records.show_history(_settings(config), limit))


@app.command()
def plan(config: ConfigOption = Path("window.toml")) -> None:
    """Validate config and environment and print what `run` would do; touches nothing."""
    from orchestrator.commands import plan as planner

    typer.echo(planner.describe(_settings(config)))


@app.command()
def announce(
    at: Annotated[str, typer.Option("--at", help='Local start time, "YYYY-MM-DD HH:MM".')],
    tz: Annotated[str, typer.Option("--tz", help="Time zone of --at, e.g. Europe/Athens.")],
    config: ConfigOption = Path("window.toml"),
) -> None:
    """Send the advance notice (communication.notice) through notify's URLs; print it."""
    from orchestrator.commands import plan

    _exit(plan.announce(_settings(config), at, tz))


@app.command()
def lint(config: ConfigOption = Path("window.toml"),
         everything: Annotated[bool, typer.Option(
             "--all", help="Also show the findings that cannot matter here.")] = False,
         ) -> None:
    """Lint the pending migration files (the migration clinic); exit 3 on any error."""
    from orchestrator.clinic import examine

    _exit(examine.lint(_settings(config), everything=everything))


@app.command()
def backups(config: ConfigOption = Path("window.toml")) -> None:
    """Backups with size, age, verified or not, and where; retained _failed_ databases."""
    from orchestrator.commands import housekeeping

    typer.echo(housekeeping.show_backups(_settings(config)))


@app.command()
def prune(
    config: ConfigOption = Path("window.toml"),
    confirm: ConfirmOption = None,
    keep: Annotated[int | None, typer.Option(min=0, help="Keep the newest N archives.")] = None,
    failed_databases: Annotated[bool, typer.Option(
        "--failed-databases", help="Drop retained <db>_failed_<run_id> databases.")] = False,
) -> None:
    """Delete old archives and/or retained failed databases, behind the phrase."""
    from orchestrator.commands import housekeeping

    _exit(housekeeping.prune(_settings(config), confirm, keep=keep,
                         failed_databases=failed_databases))


class PackageManagerChoice(StrEnum):
    PNPM = "pnpm"
    NPM = "npm"
    YARN = "yarn"


class BannerChoice(StrEnum):
    FILE = "file"
    SSH = "ssh"
    HTTP = "http"


@app.command()
def init(  # every option is a flag: keyword-only
    *,
    prisma: Annotated[bool, typer.Option(
        "--prisma", help="Migrate with prisma migrate deploy and read its table; default:"
                         " when the project uses Prisma.")] = False,
    pnpm: Annotated[bool, typer.Option("--pnpm", help="The project uses pnpm.")] = False,
    npm: Annotated[bool, typer.Option("--npm", help="The project uses npm.")] = False,
    yarn: Annotated[bool, typer.Option("--yarn", help="The project uses yarn.")] = False,
    workdir: Annotated[str | None, typer.Option(
        help="The folder the migration runs in, from the repository root; default: the one"
             " holding prisma/schema.prisma or package.json.")] = None,
    name: Annotated[str | None, typer.Option(
        help="The window's name; default: this folder's name with -prod.")] = None,
    phrase: Annotated[str | None, typer.Option(
        help="The confirmation phrase; default: the name in capitals with -OK.")] = None,
    pg_version: Annotated[int | None, typer.Option(
        help="Production's PostgreSQL major version; default: asked of its server, else 17.")
    ] = None,
    production_env: Annotated[str | None, typer.Option(
        help="The secret holding production's URL; default: DATABASE_URL.")] = None,
    staging_env: Annotated[str | None, typer.Option(
        help="The secret holding staging's URL; default: DATABASE_URL_STAGING, none with"
             " --clone.")] = None,
    clone: Annotated[bool, typer.Option(
        "--clone", help="Rehearse on a copy of production (no staging database).")] = False,
    banner: Annotated[BannerChoice, typer.Option(
        help="file: a page on this machine; ssh: a command on the web server; http: an"
             " endpoint.")] = BannerChoice.FILE,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    fleet_file: Annotated[Path | None, typer.Option(
        "--fleet", help="Write .github/workflows/fleet-window.yml instead, running this"
                        " fleet.toml from GitHub Actions (its config in S3).")] = None,
) -> None:
    """Write an annotated window.toml and .github/workflows/maintenance-window.yml here."""
    from orchestrator.commands import init as starter

    if fleet_file is not None:
        fleet.init_workflow(fleet_file, pg_version, force=force)
        return

    managers = [m for m, chosen in zip(PackageManagerChoice, (pnpm, npm, yarn), strict=True)
                if chosen]
    if len(managers) > 1:
        raise UsageError("choose one of --pnpm, --npm and --yarn.")
    options, found = starter.options(
        Path.cwd(), name=name, phrase=phrase, prisma=prisma,
        package_manager=managers[0].value if managers else None, workdir=workdir,
        pg_version=pg_version, production_env=production_env, staging_env=staging_env,
        clone=clone, banner=banner.value)
    for line in found:
        typer.echo(f"found: {line}")
    for path in starter.write(Path.cwd(), options, force=force):
        typer.echo(f"wrote {path}")
    for line in starter.notes(Path.cwd(), options):
        typer.echo(f"note: {line}")
    typer.echo(f"next: edit window.toml, then `window plan`; set the {', '.join(options.secrets)}"
               " secrets for the workflow.")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo folder for a look afterwards.")] = False,
) -> None:
    """Run two windows against a throwaway local PostgreSQL: one succeeds, one rolls back."""
    from orchestrator.commands import demo as showcase

    _exit(showcase.main(keep=keep))


app.add_typer(fleet.app, name="fleet", short_help=fleet.app.info.help)
whole_sentences(app)
whole_sentences(fleet.app)


def main() -> None:
    # Ctrl-C before a window drives (at the phrase, while a database is waited for) is
    # Interrupted, exit 5, like every interruption: click would turn a KeyboardInterrupt into
    # "Aborted!" and exit 1, which means "rolled back". A window that starts driving
    # installs its own handlers (engine.runner.Signals), and a fleet runner its own.
    signal.signal(signal.SIGINT, direct.interrupted)
    try:
        app()
    except WindowError as exc:
        typer.echo(f"window: {direct.one_line(exc.message)}", err=True)
        sys.exit(exc.exit_code)

