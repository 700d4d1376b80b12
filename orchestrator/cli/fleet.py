"""``window fleet``: one maintenance window per database of a fleet, in waves.

Mounted under the main app (``app.add_typer(fleet.app, name="fleet")``), so its errors
reach the same ``WindowError`` handler. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.options import APP_SETTINGS, ConfirmOption, JsonLogsOption

app = typer.Typer(
    help="Run the window on every database of a fleet: a canary first, then waves.",
    **APP_SETTINGS,
)

FleetArgument = Annotated[Path, typer.Argument(
    help="fleet.toml: the targets (or a catalog query) and the shared window.toml.")]

TargetsOption = Annotated[list[str] | None, typer.Option(
    "--target", metavar="NAME",
    help="Only this target (again for more): wait for its wave, run its window, end when it"
         " ended; a CI job per target (no other process is kept out of the fleet run).")]

SkipStagingOption = Annotated[bool, typer.Option(
    "--skip-staging",
    help="Skip every target's rehearsal (also needs [staging] skip = true).")]


def _only(names: list[str] | None) -> frozenset[str] | None:
    return frozenset(names) if names else None


@app.command()
def plan(
    fleet_file: FleetArgument = Path("fleet.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The targets by name (never their URLs), the canary and the waves; nothing is run."""
    import json

    from orchestrator import log
    from orchestrator.fleet import spec

    log.configure()
    facts = spec.plan(spec.load(fleet_file))
    typer.echo(json.dumps(facts, indent=2) if as_json else spec.plan_text(facts))


@app.command()
def run(
    fleet_file: FleetArgument = Path("fleet.toml"),
    confirm: ConfirmOption = None,
    target: TargetsOption = None,
    skip_staging: SkipStagingOption = False,
    json_logs: JsonLogsOption = False,
) -> None:
    """Start a fleet run and drive it until it ends (one runner per fleet run)."""
    from orchestrator import log
    from orchestrator.fleet import runner, spec

    log.configure(json_lines=json_logs)
    raise typer.Exit(runner.run(spec.load(fleet_file), confirm,
                                skip_staging=skip_staging, only=_only(target)))


@app.command(name="open")
def open_(
    fleet_file: FleetArgument = Path("fleet.toml"),
    confirm: ConfirmOption = None,
    skip_staging: SkipStagingOption = False,
    json_logs: JsonLogsOption = False,
) -> None:
    """Record a new fleet run and run nothing: a CI workflow's jobs then run its targets."""
    from orchestrator import log
    from orchestrator.fleet import runner, spec

    log.configure(json_lines=json_logs)
    raise typer.Exit(runner.open_run(spec.load(fleet_file), confirm, skip_staging=skip_staging))


@app.command()
def resume(fleet_file: FleetArgument = Path("fleet.toml"), target: TargetsOption = None,
           fleet_run: Annotated[str | None, typer.Option(
               "--fleet-run", metavar="ID",
               help="Only if this is the fleet run under way.")] = None,
           json_logs: JsonLogsOption = False) -> None:
    """Drive the current fleet run again: interrupted targets resume, waves go on."""
    from orchestrator import log
    from orchestrator.fleet import runner, spec

    log.configure(json_lines=json_logs)
    raise typer.Exit(runner.resume(spec.load(fleet_file), _only(target), fleet_run))


@app.command()
def abort(fleet_file: FleetArgument = Path("fleet.toml"), confirm: ConfirmOption = None,
          json_logs: JsonLogsOption = False) -> None:
    """Stop the waves and roll back every target whose window is in flight."""
    from orchestrator import log
    from orchestrator.fleet import runner, spec

    log.configure(json_lines=json_logs)
    raise typer.Exit(runner.abort(spec.load(fleet_file), confirm))


@app.command()
def status(
    fleet_file: FleetArgument = Path("fleet.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Where the fleet run stands: its wave, and every target's window."""
    from orchestrator import log
    from orchestrator.fleet import record, spec

    log.configure()
    typer.echo(record.status(spec.load(fleet_file), as_json))


@app.command()
def worker(
    fleet_file: FleetArgument = Path("fleet.toml"),
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=1, max=64,
        help="Windows this worker runs at once (default: the fleet's concurrency).")] = None,
    hostname: Annotated[str | None, typer.Option(
        "--hostname", help="The worker's Celery node name (default: windowPID@host).")] = None,
    json_logs: JsonLogsOption = False,
) -> None:
    """Run a Celery worker for a fleet whose engine is kind = "celery": it takes the targets'
    windows from the broker, on this machine, until stopped (Ctrl-C: after its windows)."""
    from orchestrator import log
    from orchestrator.errors import UsageError
    from orchestrator.fleet import runner, spec

    log.configure(json_lines=json_logs)
    fleet = spec.load(fleet_file)
    if fleet.spec.engine.kind != "celery":
        raise UsageError(f'{fleet_file}: `window fleet worker` needs [engine] kind = "celery"'
                         " (the built-in runner needs no worker).")
    celery_engine = runner.celery_engine()
    raise typer.Exit(celery_engine.work(fleet, concurrency or fleet.spec.concurrency, hostname))


def init_workflow(fleet_file: Path, pg_version: int | None, *, force: bool) -> None:
    """``window init --fleet``: the GitHub Actions workflow that runs this fleet."""
    from orchestrator.commands import init as starter
    from orchestrator.errors import ConfigError, UsageError
    from orchestrator.fleet import spec

    folder = Path.cwd()
    try:  # the workflow runs from the repository's root: the fleet file must be in it
        relative = fleet_file.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"--fleet {fleet_file} must be a .toml file inside this folder (the"
                         " repository's root), such as fleet.toml or ops/fleet.toml.") from None
    fleet = spec.load(fleet_file)
    if fleet.settings.state.backend != "s3":
        raise ConfigError(f"{fleet.config_path}: a fleet run from GitHub Actions needs"
                          ' [state] backend = "s3": each job\'s runner vanishes with it, the'
                          " journals must not.")
    if fleet.spec.engine.kind != "builtin":
        raise ConfigError(f"{fleet_file}: GitHub Actions is the engine of this workflow;"
                          " remove [engine] (or kind = \"builtin\").")
    settings = fleet.settings
    # The jobs' client tools follow the canary's server (the first target's by default).
    listed = fleet.spec.targets
    canary = next((t for t in listed if t.name == fleet.spec.canary),
                  listed[0] if listed else None)
    options, found = starter.options(
        folder, name=settings.window.name, phrase=settings.window.confirm_phrase,
        pg_version=pg_version,
        production_env=canary.url_env if canary else settings.target.url_env)
    chosen = starter.FleetOptions(options, relative, tuple(spec.secret_names(fleet)),
                                  fleet.spec.concurrency)
    for line in found:
        typer.echo(f"found: {line}")
    for path in starter.write_fleet(folder, chosen, force=force):
        typer.echo(f"wrote {path}")
    typer.echo(f"next: set the {', '.join(chosen.secrets)} secrets (and the AWS_REGION"
               " variable) for the workflow.")
