"""``window fleet``, end to end: real target databases, real ``window fleet`` processes and the
children they start; the S3 case against moto's standalone server."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from orchestrator import config
from orchestrator.commands import demo
from orchestrator.engine import holding
from orchestrator.engine.rows import Run
from orchestrator.postgres.cluster import Cluster
from tests.integration.moto import aws_env, moto_server  # noqa: F401

_fleets = itertools.count(1)
BUCKET = "fleet-state"


@dataclass
class FleetProject:
    """Target databases (each a shop), one shared staging database, and project folders
    (git checkouts holding window.toml, migration.sql and fleet.toml) that migrate them."""

    cluster: Cluster
    root: Path
    prefix: str
    names: list[str]
    env: dict[str, str] = field(default_factory=dict)
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        staging = demo.create_shop(self.cluster, f"{self.prefix}_staging")
        self.env = {**os.environ, "DATABASE_URL_STAGING": staging, "NO_COLOR": "1"}
        self.env.pop("DATABASE_URL", None)
        for name in self.names:
            self.env[self.variable(name)] = demo.create_shop(self.cluster, self.db(name))

    def db(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def url(self, name: str) -> str:
        return self.env[self.variable(name)]

    @staticmethod
    def variable(name: str) -> str:
        return f"{name.upper()}_URL"

    def write(self, folder: str = "project", *, migration_sql: str = demo.GOOD_MIGRATION,
              staging: str = 'mode = "clone"', window_extra: str = "",
              fleet_toml: str | None = None, **overrides: Any) -> Path:
        """A project folder; its fleet.toml's path. Every migration appends the database it
        ran on to the shared ``migrated.log``."""
        overrides.setdefault("migrate", (
            'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && psql -X -At -c'
            f' "SELECT current_database()" "$DATABASE_URL" >> {self.root / "migrated.log"}'))
        where = self.root / folder
        text = demo.write_project(where, migration_sql, **overrides).read_text()
        anchor = 'url_env = "DATABASE_URL_STAGING"'
        (where / "window.toml").write_text(
            window_extra + "\n" + text.replace(anchor, f"{anchor}\n{staging}"))
        (where / "fleet.toml").write_text(fleet_toml or self.targets_toml())
        return where / "fleet.toml"

    def targets_toml(self, concurrency: int = 2) -> str:
        entries = "".join(f'\n[[targets]]\nname = "{n}"\nurl_env = "{self.variable(n)}"\n'
                          for n in self.names)
        return f'config = "window.toml"\nconcurrency = {concurrency}\n{entries}'

    def state_in_s3(self) -> str:
        """The state bucket in moto's server (``aws_env`` is up) and the AWS variables for
        the processes; the ``[state]`` section that puts window.toml's state there."""
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        self.env.update({k: v for k, v in os.environ.items()
                         if k.startswith(("AWS_", "NO_PROXY", "no_proxy"))})
        return f'[state]\nbackend = "s3"\nuri = "s3://{BUCKET}/shop"\nlease_ttl = 6\n'

    def fleet(self, *args: str, folder: str = "project", timeout: float = 120
              ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", "fleet", *args],
                              cwd=self.root / folder, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def start(self, *args: str, folder: str = "project", log: str | None = None
              ) -> subprocess.Popen[str]:
        """``window fleet ...`` in the background, its output in ``<log or folder>.log``."""
        with (self.root / f"{log or folder}.log").open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "fleet", *args], cwd=self.root / folder,
                env=self.env, text=True, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def start_until_waiting(self) -> subprocess.Popen[str]:
        """``fleet run`` in the background, once a migration touched ``waiting``."""
        runner = self.start("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging")
        deadline = time.monotonic() + 60
        while not (self.root / "project" / "waiting").exists():
            assert runner.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.1)
        return runner

    def output(self, log: str = "project") -> str:
        return (self.root / f"{log}.log").read_text()

    def status(self, folder: str = "project") -> dict[str, Any]:
        done = self.fleet("status", "fleet.toml", "--json", folder=folder)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def settings(self, folder: str = "project") -> config.Settings:
        return config.load(self.root / folder / "window.toml")

    def run_of(self, name: str, fleet_run: str, folder: str = "project") -> Run | None:
        return holding.latest_tagged_run(self.settings(folder).for_target(name), fleet_run)

    def runs(self, name: str, folder: str = "project") -> list[Run]:
        journal = holding.reader(self.settings(folder).for_target(name))
        if journal is None:
            return []
        with journal:
            return journal.runs()

    def migrated(self) -> list[str]:
        log = self.root / "migrated.log"
        return log.read_text().split() if log.exists() else []

    def has_status_column(self, name: str) -> bool:
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM information_schema.columns WHERE"
                               " table_name = 'orders' AND column_name = 'status'").fetchone()
        return bool(row and row[0])

    def stop_all(self) -> None:
        """A failed test must not leave windows running: the runners, and every process
        working in the project folders (children run in their own sessions)."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if (proc / "cwd").readlink().is_relative_to(self.root) \
                        and int(proc.name) != os.getpid():
                    os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture
def make_fleet(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    made: list[FleetProject] = []

    def make(*names: str) -> FleetProject:
        project = FleetProject(cluster, tmp_path, f"fleet{next(_fleets)}", list(names))
        made.append(project)
        return project

    yield make
    for project in made:
        project.stop_all()


def fleet_id(output: str) -> str:
    return next(word.strip(":.") for word in output.split() if word.startswith("fleet_2"))


def test_a_fleet_from_a_catalog_runs_the_canary_first_then_waves_of_two(
        make_fleet: Any, cluster: Cluster) -> None:
    names = ["c0", "t1", "t2", "t3", "t4", "t5"]
    project = make_fleet(*names)
    catalog = demo.create_shop(cluster, f"{project.prefix}_catalog")
    with psycopg.connect(catalog, autocommit=True) as conn:
        conn.execute("CREATE TABLE databases (name text, url text, position int)")
        for position, name in enumerate(reversed(names)):  # canary named in the file
            conn.execute("INSERT INTO databases VALUES (%s, %s, %s)",
                         (name, project.url(name), position))
    project.env["CATALOG_URL"] = catalog
    project.write(staging="skip = true", fleet_toml=textwrap.dedent("""\
        concurrency = 2
        canary = "c0"

        [catalog]
        url_env = "CATALOG_URL"
        query = "SELECT name, url FROM databases ORDER BY position"
    """))

    done = project.fleet("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging")

    assert done.returncode == 0, done.stdout + done.stderr
    fleet_run = fleet_id(done.stdout)
    assert f"fleet run {fleet_run} completed: all 6 targets." in done.stdout
    assert "[t5] " in done.stdout and "[c0] " in done.stdout  # each child's lines, prefixed
    assert demo.APP_PASSWORD not in done.stdout + done.stderr
    runs = {name: project.run_of(name, fleet_run) for name in names}
    assert all(run is not None and run.state == "completed" for run in runs.values())
    order = ["c0", "t5", "t4", "t3", "t2", "t1"]  # the catalog's order, canary first
    waves = [order[:1], order[1:3], order[3:5], order[5:]]
    for earlier, later in itertools.pairwise(waves):
        last_finish = max(runs[n].finished_at or 0 for n in earlier)  # type: ignore[union-attr]
        assert all(runs[n].created_at > last_finish for n in later)  # type: ignore[union-attr]
    assert sorted(project.migrated()) == sorted(project.db(n) for n in names)
    assert all(project.has_status_column(name) for name in names)
    facts = project.status()
    assert (facts["state"], facts["wave"], facts["exit_code"]) == ("completed", None, 0)
    assert [t["name"] for t in facts["targets"]] == order


def fails_only_on(dbname: str) -> str:
    """The good migration, then a statement that fails on one production database alone
    (the clone rehearsal runs on a scratch copy with another name, and passes)."""
    return demo.GOOD_MIGRATION + textwrap.dedent(f"""
        DO $$ BEGIN
          IF current_database() = '{dbname}' THEN
            RAISE EXCEPTION 'this database holds rows the migration cannot take';
          END IF;
        END $$;
    """)


def test_a_failing_target_rolls_back_alone_and_stops_the_waves(make_fleet: Any) -> None:
    project = make_fleet("c0", "t1", "bad", "t3", "t4")
    project.write(migration_sql=fails_only_on(project.db("bad")))
    before = demo.fingerprint(project.url("bad"))

    done = project.fleet("run", "fleet.toml", "--confirm", demo.PHRASE)

    assert done.returncode == 1, done.stdout + done.stderr
    fleet_run = fleet_id(done.stdout)
    assert f"fleet run {fleet_run} stopped: bad ended rolled_back (exit 1)." in done.stdout
    assert "Not started: t3, t4." in done.stdout
    assert demo.fingerprint(project.url("bad")) == before  # restored: data intact
    bad = project.run_of("bad", fleet_run)
    assert bad is not None and (bad.state, bad.exit_code) == ("rolled_back", 1)
    for name in ("c0", "t1"):  # the canary and bad's wave-mate completed and stay so
        run = project.run_of(name, fleet_run)
        assert run is not None and run.state == "completed"
        assert project.has_status_column(name)
    for name in ("t3", "t4"):  # later waves never started
        assert project.runs(name) == []
        assert not project.has_status_column(name)
    facts = project.status()
    assert (facts["state"], facts["stopped_by"], facts["wave"]) == ("stopped", "bad", 1)
    assert "bad ended rolled_back (exit 1)" in facts["reason"]

    again = project.fleet("resume", "fleet.toml")  # nothing failed is false: no new wave

    assert again.returncode == 1, again.stdout + again.stderr
    assert project.runs("t3") == [] and project.runs("t4") == []
    assert project.run_of("bad", fleet_run) == bad  # not run twice


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_second_runner_on_a_fleet_run_is_refused_busy_and_every_target_ends_once(
        make_fleet: Any, request: pytest.FixtureRequest, backend: str) -> None:
    """local: a second process in the project folder (the fleet's kernel lock). s3: a
    second machine, as a second checkout with its own state folder, sharing the state in S3
    (moto's server; the fleet's lease)."""
    names = ["c0", "t1", "t2"]
    project = make_fleet(*names)
    folders, shared_state = ["project", "project"], ""
    if backend == "s3":
        request.getfixturevalue("aws_env")
        shared_state = project.state_in_s3()
        folders = ["machine-a", "machine-b"]
    root = project.root
    for folder in set(folders):  # every migration waits for `go`
        project.write(folder, staging="skip = true", window_extra=shared_state,
                      fleet_toml=project.targets_toml(concurrency=2), migrate=(
                          'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" &&'
                          ' psql -X -At -c "SELECT current_database()" "$DATABASE_URL"'
                          f' >> {root}/migrated.log && touch {root}/waiting'
                          f" && while [ ! -e {root}/go ]; do sleep 0.1; done"))
    first = project.start("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging",
                          folder=folders[0], log="runner-0")
    deadline = time.monotonic() + 60
    while not (root / "waiting").exists():  # the canary migrates
        assert first.poll() is None and time.monotonic() < deadline, project.output("runner-0")
        time.sleep(0.1)

    for second in (("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging"),
                   ("resume", "fleet.toml")):
        started = time.monotonic()
        done = project.fleet(*second, folder=folders[1])
        assert done.returncode == 6, done.stdout + done.stderr
        assert time.monotonic() - started < 30  # at once, not once the first is done
        assert "Traceback" not in done.stderr and done.stdout == "", done.stdout + done.stderr
        sentence = done.stderr.strip().splitlines()[-1]  # after the audit's log line
        assert sentence.startswith("window: ") and sentence.count(". ") == 0, sentence
        assert "another `window fleet` process drives the fleet run of" in sentence
        assert "one process drives a fleet run" in sentence
        assert '[engine] kind = "celery"' in sentence and "`window init --fleet`" in sentence
        holder = "fencing token" if backend == "s3" else f"pid {first.pid} on this machine"
        assert holder in sentence, sentence
    (root / "go").touch()

    assert first.wait(timeout=110) == 0, project.output("runner-0")
    assert sorted(project.migrated()) == sorted(project.db(n) for n in names)  # once each
    for name in names:
        assert [run.state for run in project.runs(name, folder=folders[0])] == ["completed"]
    assert project.status(folders[1])["state"] == "completed"
    after = project.fleet("resume", "fleet.toml", folder=folders[1])  # the lock went with it
    assert after.returncode == 0, after.stdout + after.stderr
    assert sorted(project.migrated()) == sorted(project.db(n) for n in names)


def test_fleet_refusals_are_one_sentence_and_start_nothing(make_fleet: Any,
                                                           cluster: Cluster) -> None:
    project = make_fleet("c0", "t1")
    fleet_file = project.write(staging='mode = "url"')
    url = project.env.pop(project.variable("t1"))

    def refused(*args: str, code: int = 2) -> str:
        done = project.fleet(*args)
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert demo.APP_PASSWORD not in done.stdout + done.stderr
        return done.stderr.strip()

    run = ("run", "fleet.toml", "--confirm", demo.PHRASE)
    assert "T1_URL is not set: it must hold the target 't1' database URL" in refused(*run)
    project.env[project.variable("t1")] = url
    assert "several targets would rehearse on the one staging database" in refused(*run)
    fleet_file.write_text(project.targets_toml(concurrency=1))
    assert "the confirmation phrase does not match" in refused(
        "run", "fleet.toml", "--confirm", "NOPE", code=3)
    project.env["CATALOG_URL"] = catalog = demo.create_shop(cluster, f"{project.prefix}_cat")
    fleet_file.write_text('[catalog]\nurl_env = "CATALOG_URL"\nquery = "SELECT nme FROM x"\n')
    assert 'the [catalog] query failed: relation "x" does not exist' in refused(*run)
    fleet_file.write_text(f'[catalog]\nurl_env = "CATALOG_URL"\n'  # (url, name): swapped
                          f"query = \"SELECT '{catalog}', 'c0'\"\n")
    assert "which is not a target name" in refused(*run)
    assert "no fleet has run" in refused("status", "fleet.toml")
    assert project.runs("c0") == [] and project.migrated() == []


def test_status_and_abort_of_a_fleet_stopped_mid_wave(make_fleet: Any) -> None:
    project = make_fleet("c0", "t1", "t2", "t3")
    hold = (' && db=$(psql -X -At -c "SELECT current_database()" "$DATABASE_URL")'
            f' && if [ "$db" != "{project.db("c0")}" ]; then touch "migrating.$db"'
            " && sleep 60; fi")
    project.write(staging="skip = true", migrate='psql -X -q -v ON_ERROR_STOP=1 -f'
                  ' migration.sql "$DATABASE_URL"' + hold)
    before = {n: demo.fingerprint(project.url(n)) for n in ("t1", "t2")}
    runner = project.start("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging")
    deadline = time.monotonic() + 60
    while not all((project.root / "project" / f"migrating.{project.db(n)}").exists()
                  for n in ("t1", "t2")):
        assert runner.poll() is None, project.output()
        assert time.monotonic() < deadline, project.output()
        time.sleep(0.1)

    facts = project.status()

    assert (facts["state"], facts["wave"], facts["waves"]) == ("running", 1, 3)
    states = {t["name"]: t["state"] for t in facts["targets"]}
    assert states == {"c0": "completed", "t1": "migrate", "t2": "migrate", "t3": "pending"}
    assert all(t["run_id"] for t in facts["targets"][:3])

    aborted = project.fleet("abort", "fleet.toml", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert runner.wait(timeout=60) == 1, project.output()  # its targets rolled back
    facts = project.status()
    assert facts["state"] == "aborted"
    states = {t["name"]: t["state"] for t in facts["targets"]}
    assert states == {"c0": "completed", "t1": "rolled_back", "t2": "rolled_back",
                      "t3": "pending"}
    assert {n: demo.fingerprint(project.url(n)) for n in ("t1", "t2")} == before
    assert project.has_status_column("c0")
    again = project.fleet("resume", "fleet.toml")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "was aborted" in again.stdout
    assert project.runs("t3") == []


def test_an_interrupted_fleet_resumes_where_it_stopped(make_fleet: Any) -> None:
    project = make_fleet("c0", "t1", "t2")
    project.write(staging="skip = true", migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && touch migrated.$$'
        ' && if [ ! -e go ]; then touch waiting && sleep 60; fi'))
    runner = project.start_until_waiting()
    (project.root / "project" / "go").touch()  # later migrations go straight through

    runner.send_signal(signal.SIGINT)

    assert runner.wait(timeout=60) == 5, project.output()
    assert "`window fleet resume` continues it" in project.output()
    fleet_run = fleet_id(project.output())
    canary = project.run_of("c0", fleet_run)
    assert canary is not None and canary.state not in ("completed", "rolled_back")
    assert project.runs("t1") == []
    again = project.fleet("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging")
    assert again.returncode == 3, again.stdout + again.stderr  # never a second fleet run
    assert f"fleet run {fleet_run} has not ended (running): `window fleet resume`" \
        in again.stderr
    assert project.runs("t1") == []

    done = project.fleet("resume", "fleet.toml")

    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.run_id for r in project.runs("c0")] == [canary.run_id]  # resumed, not rerun
    assert all(project.has_status_column(n) for n in ("c0", "t1", "t2"))
    assert project.status()["state"] == "completed"


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_runner_killed_mid_window_takes_no_window_down_with_it(
        make_fleet: Any, request: pytest.FixtureRequest, backend: str) -> None:
    """local: the kernel drops the dead runner's lock at once. s3: its lease on the fleet
    keeps `fleet resume` out until it expires (lease_ttl)."""
    project = make_fleet("c0", "t1")
    shared_state = ""
    if backend == "s3":
        request.getfixturevalue("aws_env")
        shared_state = project.state_in_s3()
    project.write(staging="skip = true", window_extra=shared_state, migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && touch waiting'
        " && while [ ! -e go ]; do sleep 0.1; done"))
    runner = project.start_until_waiting()

    runner.kill()  # a dropped SSH session, an OOM kill: no chance to say anything
    runner.wait(timeout=10)
    if backend == "s3":
        early = project.fleet("resume", "fleet.toml")
        assert early.returncode == 6, early.stdout + early.stderr
        assert "`window fleet resume` takes over once it expires" in early.stderr
        time.sleep(6)  # lease_ttl
    (project.root / "project" / "go").touch()
    done = project.fleet("resume", "fleet.toml")  # waits for c0's window, then runs t1

    assert done.returncode == 0, done.stdout + done.stderr
    [canary] = project.runs("c0")
    assert canary.state == "completed" and not canary.interrupted
    journal = holding.reader(project.settings().for_target("c0"))
    assert journal is not None
    with journal:
        assert journal.phase(canary.run_id, "migrate").attempts == 1  # never re-entered
    assert [r.state for r in project.runs("t1")] == ["completed"]


def test_a_job_per_target_runs_in_the_fleet_run_the_first_one_started(make_fleet: Any) -> None:
    """`--target`: the caller is the engine (a CI job per target). `fleet run --target` starts
    the fleet run with the canary's window; `fleet resume --target NAME --fleet-run ID` runs
    another target's window in it, while nothing drives the fleet run."""
    project = make_fleet("c0", "t1")
    project.write(staging="skip = true")

    canary = project.fleet("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging",
                           "--target", "c0")

    assert canary.returncode == 0, canary.stdout + canary.stderr
    fleet_run = fleet_id(canary.stdout)
    assert project.runs("t1") == []
    facts = project.status()
    assert (facts["fleet_run"], facts["state"], facts["wave"]) == (fleet_run, "running", 1)
    wave = project.fleet("resume", "fleet.toml", "--target", "t1", "--fleet-run", fleet_run)
    assert wave.returncode == 0, wave.stdout + wave.stderr
    assert [r.state for r in project.runs("t1")] == ["completed"]
    assert project.status()["state"] == "completed"
    assert sorted(project.migrated()) == sorted(project.db(n) for n in ("c0", "t1"))
