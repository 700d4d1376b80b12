"""The GitHub Actions workflow ``window init --fleet`` writes: GitHub Actions as a fleet's
engine.

Jobs, in order: ``targets`` lists the fleet (``window fleet plan --json``, names only) and
opens the fleet run behind the phrase (``window fleet open``), its id an output; the
``canary`` job runs the canary's window in it; ``waves`` is a matrix of the other targets,
``concurrency`` at a time, never cancelled by a wave-mate's failure (a cancelled job would
leave its window interrupted mid-migration). GitHub places the jobs; each runs its target's
window (``window fleet resume --target NAME --fleet-run ID``): it waits until the target's
wave is due, runs the window as a child, and ends when it ended; a stopped fleet starts
nothing new. No job drives the fleet run or writes its record: exactly once comes from each
target's journal, lock and lease in S3 (the runners vanish after each job), and a re-run of a
job resumes its target's window, or tells how it ended.
"""

from __future__ import annotations

import textwrap

from orchestrator.commands.init import steps
from orchestrator.commands.init.options import AWS_SECRETS, FleetOptions
from orchestrator.commands.init.workflow import STEP_INDENT, _node, _script, _secret, _setup

FLEET_WORKFLOW = ".github/workflows/fleet-window.yml"
CLIENT = "- name: Install the PostgreSQL"  # the client tools' step: the windows' jobs only


def _header(fleet: FleetOptions) -> str:
    options = fleet.options
    return textwrap.dedent(f"""\
        # Runs the maintenance window {options.name!r} on every database of {fleet.fleet_file}
        # by hand: Actions > Fleet maintenance window > Run workflow, typing the confirmation
        # phrase. The canary first, then the waves, {fleet.concurrency} at a time; a target that
        # does not complete stops the waves. The journals live in S3 ([state] backend = "s3"):
        # re-running a failed job resumes its target's window. Written by `window init --fleet`.
        name: Fleet maintenance window

        on:
          workflow_dispatch:
            inputs:
              confirm:
                description: Type {options.phrase} to run the window on every target
                required: true
                type: string

        concurrency:
          group: fleet-window
          cancel-in-progress: false

        permissions:
          contents: read

        env:
          WINDOW_PHRASE: {options.phrase}
          PG_VERSION: "{options.pg_version}"   # the targets' major version: their client tools
          FLEET_FILE: {fleet.fleet_file}
          AWS_DEFAULT_REGION: ${{{{ vars.AWS_REGION || 'us-east-1' }}}}

        jobs:
        """)


def _job(name: str, head: str, parts: list[str]) -> str:
    body = textwrap.indent(head, "    ") + "    steps:\n" + "".join(
        textwrap.indent(part, STEP_INDENT) for part in parts)
    return f"  {name}:\n{body}"


def _env(fleet: FleetOptions, **extra: str) -> dict[str, str]:
    return {name: _secret(name) for name in fleet.secrets} | extra


def workflow(fleet: FleetOptions) -> str:
    options = fleet.options
    setup = _setup(options, fleet.secrets)
    window = [*setup, *_node(options)]
    listing = _job("targets", textwrap.dedent("""\
        runs-on: ubuntu-latest
        timeout-minutes: 15
        environment: production
        outputs:
          canary: ${{ steps.plan.outputs.canary }}
          waves: ${{ steps.plan.outputs.waves }}
          fleet_run: ${{ steps.open.outputs.fleet_run }}
        """), [*(part for part in setup if not part.startswith(CLIENT)),  # names only
               _script("List the targets", steps.FLEET_PLAN,
                       _env(fleet)).replace("\n", "\n  id: plan\n", 1),
               _script("Open the fleet run", steps.FLEET_OPEN,
                       _env(fleet, CONFIRM="${{ inputs.confirm }}")
                       ).replace("\n", "\n  id: open\n", 1)])
    fleet_run = "${{ needs.targets.outputs.fleet_run }}"
    canary = _job("canary", textwrap.dedent("""\
        needs: targets
        runs-on: ubuntu-latest
        timeout-minutes: 120
        environment: production
        """), [*window, _script(
            "Run the canary's window", steps.FLEET_TARGET,
            _env(fleet, TARGET="${{ needs.targets.outputs.canary }}", FLEET_RUN=fleet_run))])
    waves = _job("waves", textwrap.dedent(f"""\
        needs: [targets, canary]
        if: needs.targets.outputs.waves != '[]'
        runs-on: ubuntu-latest
        timeout-minutes: 180   # a target waits here for its wave, then runs its window
        environment: production
        strategy:
          max-parallel: {fleet.concurrency}
          fail-fast: false   # never cancel a wave-mate mid-window: it ends its window itself
          matrix:
            target: ${{{{ fromJSON(needs.targets.outputs.waves) }}}}
        """), [*window, _script(
            "Run the target's window once its wave is due", steps.FLEET_TARGET,
            _env(fleet, TARGET="${{ matrix.target }}", FLEET_RUN=fleet_run))])
    return _header(fleet) + listing + canary + waves


__all__ = ["AWS_SECRETS", "FLEET_WORKFLOW", "workflow"]
