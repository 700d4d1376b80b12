"""The fleet's GitHub Actions workflow (``window init --fleet``), its jobs run here in the order
GitHub runs them: each step's script with bash, the values GitHub would pass given by the test,
each job's outputs read from its ``$GITHUB_OUTPUT`` as GitHub reads them. Real target databases,
the state in S3 (moto's server), real ``window`` processes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orchestrator.commands import demo
from tests.integration.moto import aws_env, moto_server  # noqa: F401
from tests.integration.test_fleet import fails_only_on, make_fleet  # noqa: F401
from tests.support import workflow_steps
from tests.support.workflow_steps import FLEET_WORKFLOW

NAMES = ["c0", "t1", "t2", "t3", "t4"]
CONCURRENCY = 2


def outputs(path: Path) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as GitHub reads it: name=value lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines)


def production(project: Any) -> list[str]:
    """The target databases migrated, in order (the rehearsals' copies left out)."""
    return [db for db in project.migrated() if "_rehearsal_" not in db]


class Workflow:
    def __init__(self, project: Any, folder: Path) -> None:
        self.project, self.folder = project, folder
        self.secrets = {name: project.env[name] for name in
                        workflow_steps.step(folder, "List the targets", workflow=FLEET_WORKFLOW,
                                            job="targets")["env"]}
        self.jobs = 0

    def job(self, job: str, step: str, **given: str) -> tuple[subprocess.CompletedProcess[str],
                                                              dict[str, str]]:
        """One job's window step; what it said and its outputs."""
        self.jobs += 1
        output = self.folder.parent / f"github-output-{job}-{self.jobs}"
        env = {**self.project.env, "GITHUB_OUTPUT": str(output)}
        done = workflow_steps.run_step(
            self.folder, step, {**self.secrets, "AWS_DEFAULT_REGION": "us-east-1", **given},
            base=env, workflow=FLEET_WORKFLOW, job=job, timeout=240)
        return done, outputs(output)


def through_the_canary(project: Any, migration_sql: str = demo.GOOD_MIGRATION
                       ) -> tuple[Workflow, dict[str, str], list[list[str]], str]:
    """The state bucket, the project, `window init --fleet`, then the targets job (it lists
    the targets and opens the fleet run) and the canary job: the workflow, the targets job's
    outputs, the waves it listed, the fleet run."""
    fleet_file = project.write(window_extra=project.state_in_s3(), migration_sql=migration_sql,
                               fleet_toml=project.targets_toml(concurrency=CONCURRENCY))
    folder = fleet_file.parent
    init = subprocess.run([sys.executable, "-m", "orchestrator", "init", "--fleet", "fleet.toml",
                           "--pg-version", "17"], cwd=folder, env=project.env, text=True,
                          capture_output=True, timeout=60, check=False)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "wrote .github/workflows/fleet-window.yml" in init.stdout.replace(f"{folder}/", "")
    run = Workflow(project, folder)

    wrong, _ = run.job("canary", "Check the confirmation phrase", CONFIRM="nope")
    assert wrong.returncode == 1 and "does not match" in wrong.stdout

    listed, plan = run.job("targets", "List the targets")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "postgresql://" not in listed.stdout + listed.stderr  # names, never URLs
    waves = json.loads(listed.stdout[listed.stdout.index("{"):])["waves"]
    assert json.loads(plan["waves"]) == [n for wave in waves[1:] for n in wave]

    opened, opening = run.job("targets", "Open the fleet run", CONFIRM=demo.PHRASE)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    fleet_run = opening["fleet_run"]
    assert f"fleet run {fleet_run} opened" in opened.stdout and production(project) == []
    again, _ = run.job("targets", "Open the fleet run", CONFIRM=demo.PHRASE)  # a second dispatch
    assert again.returncode == 3, again.stdout + again.stderr
    assert f"fleet run {fleet_run} has not ended (running)" in again.stderr

    canary, _ = run.job("canary", "Run the canary's window", TARGET=plan["canary"],
                        FLEET_RUN=fleet_run)
    assert canary.returncode == 0, canary.stdout + canary.stderr
    assert production(project) == [project.db(plan["canary"])]
    return run, plan, waves, fleet_run


def matrix(run: Workflow, plan: dict[str, str], fleet_run: str
           ) -> dict[str, subprocess.CompletedProcess[str]]:
    """The waves job's matrix as GitHub runs it: its entries in order, max-parallel at once."""
    def wave_job(name: str) -> subprocess.CompletedProcess[str]:
        return run.job("waves", "Run the target's window", TARGET=name, FLEET_RUN=fleet_run)[0]

    names = json.loads(plan["waves"])
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as slots:
        return dict(zip(names, slots.map(wave_job, names), strict=True))


def test_the_fleet_workflow_runs_its_jobs_in_order_every_target_once(
        make_fleet: Any, aws_env: dict[str, str]) -> None:  # noqa: F811
    project = make_fleet(*NAMES)

    run, plan, waves, fleet_run = through_the_canary(project)
    done = matrix(run, plan, fleet_run)

    assert waves == [["c0"], ["t1", "t2"], ["t3", "t4"]]
    for job in done.values():
        assert job.returncode == 0, job.stdout + job.stderr
    assert sorted(production(project)) == sorted(project.db(n) for n in NAMES)  # once each
    for name in NAMES:
        assert [r.state for r in project.runs(name)] == ["completed"], name
    runs = {name: project.runs(name)[0] for name in NAMES}
    for earlier, later in itertools.pairwise(waves):  # each wave after the one before
        assert min(runs[n].created_at for n in later) >= \
            max(runs[n].finished_at or 0 for n in earlier), (earlier, later)
    status = project.status()
    assert status["fleet_run"] == fleet_run and status["state"] == "completed"

    rerun = run.job("waves", "Run the target's window", TARGET="t3", FLEET_RUN=fleet_run)[0]
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # a re-run runs nothing again
    alone = subprocess.run([sys.executable, "-m", "orchestrator", "fleet", "run", "fleet.toml",
                            "--target", "t1", "--confirm", demo.PHRASE], cwd=run.folder,
                           env=project.env, text=True, capture_output=True, timeout=60,
                           check=False)
    assert alone.returncode == 2 and "starts with the canary (c0)" in alone.stderr
    stale = run.job("waves", "Run the target's window", TARGET="t1", FLEET_RUN="fleet_other")[0]
    assert stale.returncode == 3 and "not fleet_other" in stale.stdout + stale.stderr
    assert sorted(production(project)) == sorted(project.db(n) for n in NAMES)
    late = subprocess.run([sys.executable, "-m", "orchestrator", "fleet", "abort", "fleet.toml",
                           "--confirm", demo.PHRASE], cwd=run.folder, env=project.env,
                          text=True, capture_output=True, timeout=60, check=False)
    assert late.returncode == 0 and f"fleet run {fleet_run} completed already" in late.stdout
    following, opening = run.job("targets", "Open the fleet run", CONFIRM=demo.PHRASE)
    assert following.returncode == 0, following.stdout + following.stderr  # it ended: anew
    assert opening["fleet_run"] != fleet_run


def test_a_failing_target_fails_its_job_and_the_later_waves_start_nothing(
        make_fleet: Any, aws_env: dict[str, str]) -> None:  # noqa: F811
    project = make_fleet("c0", "t1", "bad", "t3", "t4")

    run, plan, _, fleet_run = through_the_canary(project, fails_only_on(project.db("bad")))
    done = matrix(run, plan, fleet_run)

    assert done["bad"].returncode == 1, done["bad"].stdout + done["bad"].stderr
    assert done["t1"].returncode == 0, done["t1"].stdout + done["t1"].stderr
    for name in ("t3", "t4"):  # their jobs start, find the fleet stopped, run nothing
        assert done[name].returncode == 3, done[name].stdout + done[name].stderr
        assert project.runs(name) == [] and not project.has_status_column(name)
    assert sorted(production(project)) == sorted(project.db(n) for n in ("c0", "t1"))
    assert [r.state for r in project.runs("bad")] == ["rolled_back"]
    facts = project.status()
    assert (facts["fleet_run"], facts["state"], facts["stopped_by"]) == (fleet_run, "stopped",
                                                                         "bad")
