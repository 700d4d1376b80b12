"""``window fleet`` on Celery: the real RabbitMQ and Redis of this machine, real
``window fleet worker`` processes started and killed here, real target databases.

Each test has its own queue, so tests running side by side never take each other's tasks."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kombu import Connection

from orchestrator.commands import demo
from tests.integration.test_fleet import FleetProject, fails_only_on, fleet_id, make_fleet

__all__ = ["make_fleet"]  # the fixture, shared with test_fleet

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/0"}


def celery_project(project: FleetProject, broker: str, *, concurrency: int = 2,
                   **write: Any) -> FleetProject:
    """The project's fleet.toml sends the windows to ``broker``, on a queue of its own
    (deleted after the test)."""
    queue = f"window.test.{uuid.uuid4().hex[:12]}"
    project.env["BROKER_URL"] = BROKERS[broker]
    write.setdefault("staging", "skip = true")
    project.write(fleet_toml=project.targets_toml(concurrency) + (
        f'\n[engine]\nkind = "celery"\nbroker_env = "BROKER_URL"\nqueue = "{queue}"\n'),
        **write)
    project.queue = queue  # type: ignore[attr-defined]
    return project


@pytest.fixture
def queues() -> Any:
    made: list[tuple[str, str]] = []
    yield made
    for broker, queue in made:
        with contextlib.suppress(Exception), Connection(BROKERS[broker]) as conn:
            conn.default_channel.queue_delete(queue)


def worker(project: FleetProject, log: str, concurrency: int = 1) -> subprocess.Popen[str]:
    return project.start("worker", "fleet.toml", "--concurrency", str(concurrency),
                         "--hostname", f"{log}.{project.queue}@test",  # type: ignore[attr-defined]
                         log=log)


def submit(project: FleetProject, log: str = "submitter") -> subprocess.Popen[str]:
    return project.start("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging",
                         log=log)


def finished(project: FleetProject, process: subprocess.Popen[str], log: str,
             timeout: float = 150) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(project.output(log))


def _stats() -> dict[int, tuple[int, str]]:
    """Every process's parent and state (fields 4 and 3 of /proc/pid/stat)."""
    found: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            found[int(proc.name)] = (int(parent), state)
    return found


def kill_tree(pid: int) -> None:
    """A machine lost mid-window: a process and every process under it gone at once, none
    living to see another die. SIGKILLs sent one by one would let a window whose command died
    first record that command's exit (-9) as a failed migration before its own SIGKILL came:
    so the tree is frozen first (SIGSTOP, scanned again until every process in it, a child
    forked meanwhile too, is stopped), then killed."""
    deadline = time.monotonic() + 10
    while True:
        stats = _stats()
        tree, grew = {pid} & stats.keys(), True
        while grew:
            below = {child for child, (parent, _) in stats.items() if parent in tree} - tree
            tree |= below
            grew = bool(below)
        running = [member for member in tree if stats[member][1] not in "TtZX"]
        if not running:
            break
        for member in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGSTOP)
        assert time.monotonic() < deadline, f"the processes under {pid} would not stop"
        time.sleep(0.01)
    for member in tree:  # all stopped: none runs again to see another die
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def windows(project: FleetProject) -> list[int]:
    """The pids of the project's fleet windows (their -c names the project's config)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes()
            if b"--fleet-run" in argv and str(project.root).encode() in argv:
                found.append(int(proc.name))
    return found


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_celery_runs_the_canary_first_then_waves_of_two(make_fleet: Any, queues: Any,
                                                        broker: str) -> None:
    names = ["c0", "t1", "t2", "t3"]
    project = celery_project(make_fleet(*names), broker)
    queues.append((broker, project.queue))  # type: ignore[attr-defined]
    workers = [worker(project, "worker-a"), worker(project, "worker-b")]

    submitter = submit(project)

    assert finished(project, submitter, "submitter") == 0, project.output("submitter")
    out = project.output("submitter")
    fleet_run = fleet_id(out)
    assert f"fleet run {fleet_run} completed: all 4 targets." in out
    assert out.count("sent to the broker: task window.target_window") == 4
    assert "[t3] " in out and "guest:guest" not in out
    runs = {name: project.run_of(name, fleet_run) for name in names}
    assert all(run is not None and run.state == "completed" for run in runs.values())
    waves = [names[:1], names[1:3], names[3:]]
    for earlier, later in itertools.pairwise(waves):
        last_finish = max(runs[n].finished_at or 0 for n in earlier)  # type: ignore[union-attr]
        assert all(runs[n].created_at > last_finish for n in later)  # type: ignore[union-attr]
    assert sorted(project.migrated()) == sorted(project.db(n) for n in names)  # once each
    facts = project.status()
    assert (facts["state"], facts["exit_code"]) == ("completed", 0)
    logs = "".join(project.output(f"worker-{w}") for w in "ab")
    assert logs.count("Task window.target_window[") >= 4  # the engine's own log names them
    assert "guest:guest" not in logs
    for process in workers:
        process.send_signal(signal.SIGTERM)  # a warm shutdown: nothing in flight
        assert process.wait(timeout=30) == 0


def test_a_failing_target_stops_the_celery_waves(make_fleet: Any, queues: Any) -> None:
    project = make_fleet("c0", "t1", "bad", "t3", "t4")
    celery_project(project, "redis", migration_sql=fails_only_on(project.db("bad")))
    queues.append(("redis", project.queue))  # type: ignore[attr-defined]
    before = demo.fingerprint(project.url("bad"))
    worker(project, "worker-a", concurrency=2)

    submitter = submit(project)

    assert finished(project, submitter, "submitter") == 1, project.output("submitter")
    out = project.output("submitter")
    fleet_run = fleet_id(out)
    assert f"fleet run {fleet_run} stopped: bad ended rolled_back (exit 1)." in out
    assert "Not started: t3, t4." in out
    assert demo.fingerprint(project.url("bad")) == before
    assert project.run_of("t1", fleet_run).state == "completed"  # type: ignore[union-attr]
    assert project.runs("t3") == [] and project.runs("t4") == []
    assert "[t3] sent" not in out and "[t4] sent" not in out  # never sent to the broker
    facts = project.status()
    assert (facts["state"], facts["stopped_by"]) == ("stopped", "bad")


MIGRATE_ONCE = (
    'psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS applied_log'
    ' (at timestamptz DEFAULT now())" "$DATABASE_URL"'
    ' && if [ "$(psql -X -At -c "SELECT count(*) FROM applied_log" "$DATABASE_URL")" = 0 ];'
    ' then psql -X -q -v ON_ERROR_STOP=1 -1 -f migration.sql'
    ' -c "INSERT INTO applied_log DEFAULT VALUES" "$DATABASE_URL"; fi'
    ' && if [ ! -e go ]; then touch waiting; while [ ! -e go ]; do sleep 0.1; done; fi')


def migrating(project: FleetProject, first: subprocess.Popen[str]) -> None:
    """Until the canary's migrate command (MIGRATE_ONCE) waits for ``go``, its migration in;
    worker-a (``first``) must live that long."""
    deadline = time.monotonic() + 60
    while not (project.root / "project" / "waiting").exists():
        assert first.poll() is None and time.monotonic() < deadline, project.output("worker-a")
        time.sleep(0.1)


def applied(project: FleetProject, name: str) -> int:
    with psycopg.connect(project.url(name), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM applied_log").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_a_worker_killed_mid_migrate_is_resumed_by_another_applied_once(
        make_fleet: Any, queues: Any, broker: str) -> None:
    """RabbitMQ gives the dead worker's task to the other at once (its connection closed);
    Redis would only after its visibility timeout (hours): the submitter sends the task
    again once no live process has held the unfinished window for 15 s."""
    project = celery_project(make_fleet("c0", "t1"), broker, concurrency=1,
                             migrate=MIGRATE_ONCE)
    queues.append((broker, project.queue))  # type: ignore[attr-defined]
    first = worker(project, "worker-a")
    submitter = submit(project)
    migrating(project, first)
    assert applied(project, "c0") == 1  # the migration is in, the migrate phase goes on

    second = worker(project, "worker-b")
    kill_tree(first.pid)  # the worker, its window and the migrate command: SIGKILL
    first.wait(timeout=10)
    (project.root / "project" / "go").touch()

    assert finished(project, submitter, "submitter") == 0, project.output("submitter")
    fleet_run = fleet_id(project.output("submitter"))
    [canary] = project.runs("c0")  # one window: resumed, never run again
    assert canary.state == "completed" and canary.run_id == \
        project.run_of("c0", fleet_run).run_id  # type: ignore[union-attr]
    assert applied(project, "c0") == 1 and applied(project, "t1") == 1
    assert "[c0] " in project.output("worker-b")  # the other worker finished it
    resent = "fleet_target_orphaned" in project.output("submitter")
    assert resent == (broker == "redis"), project.output("submitter")
    assert [r.state for r in project.runs("t1")] == ["completed"]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0


def test_two_submissions_of_one_fleet_run_never_run_a_target_twice(
        make_fleet: Any, queues: Any) -> None:
    """The submitter dies (SIGKILL) while the canary's window migrates; `fleet resume`
    submits the fleet run again: the canary's task is delivered twice (its copy waits for the
    window, then finds it ended), every target runs once. A second submitter beside a live one
    is refused at once (exit 6)."""
    names = ["c0", "t1", "t2"]
    project = make_fleet(*names)
    root = project.root
    celery_project(project, "redis", migrate=(
        'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && psql -X -At -c'
        f' "SELECT current_database()" "$DATABASE_URL" >> {root}/migrated.log'
        f" && touch {root}/waiting && while [ ! -e {root}/go ]; do sleep 0.1; done"))
    queues.append(("redis", project.queue))  # type: ignore[attr-defined]
    worker(project, "worker-a")
    worker(project, "worker-b")
    first = submit(project, "submitter-1")
    deadline = time.monotonic() + 90
    while not (root / "waiting").exists():  # the canary migrates in a worker
        assert first.poll() is None and time.monotonic() < deadline, \
            project.output("submitter-1")
        time.sleep(0.1)

    beside = project.fleet("resume", "fleet.toml")
    assert beside.returncode == 6, beside.stdout + beside.stderr
    assert "another `window fleet` process drives the fleet run" in beside.stderr
    first.kill()
    first.wait(timeout=10)
    again = project.start("resume", "fleet.toml", log="submitter-2")
    while "[c0] sent to the broker" not in project.output("submitter-2"):
        assert again.poll() is None and time.monotonic() < deadline, \
            project.output("submitter-2")
        time.sleep(0.1)
    (root / "go").touch()

    assert finished(project, again, "submitter-2") == 0, project.output("submitter-2")
    outputs = [project.output(f"submitter-{n}") for n in (1, 2)]
    assert "fleet_started" in outputs[0] and "fleet_started" not in outputs[1]
    assert f"fleet_run={fleet_id(outputs[1])}" in outputs[0]  # one fleet run, submitted twice
    assert [out.count("sent to the broker") for out in outputs] == [1, 3]  # c0 twice
    assert sorted(project.migrated()) == sorted(project.db(n) for n in names)  # once each
    for name in names:
        assert [run.state for run in project.runs(name)] == ["completed"], name


def test_celery_refusals_are_one_sentence_and_celery_stays_unloaded(
        make_fleet: Any, queues: Any) -> None:
    project = celery_project(make_fleet("c0", "t1"), "amqp")
    fleet_file = project.root / "project" / "fleet.toml"
    text = fleet_file.read_text()
    project.env["BROKER_URL"] = "http://guest:s3cr3t-broker@127.0.0.1:1/"

    def refused(*args: str, code: int = 2) -> str:
        done = project.fleet(*args)
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "s3cr3t-broker" not in done.stdout + done.stderr
        return done.stderr.strip()

    run = ("run", "fleet.toml", "--confirm", demo.PHRASE, "--skip-staging")
    assert "BROKER_URL must hold an amqp:// or redis:// URL" in refused(*run)
    assert "BROKER_URL must hold an amqp:// or redis:// URL" in refused("worker", "fleet.toml")
    project.env["BROKER_URL"] = "amqp://guest:s3cr3t-broker@127.0.0.1:1//"
    assert "the Celery broker (BROKER_URL) cannot be reached" in refused(*run, code=3)
    assert "no fleet has run" in refused("status", "fleet.toml")  # nothing recorded
    fleet_file.write_text(text.replace('broker_env = "BROKER_URL"\n', ""))
    assert 'kind = "celery" needs broker_env' in refused(*run)
    fleet_file.write_text(project.targets_toml())
    assert "needs [engine] kind = \"celery\"" in refused("worker", "fleet.toml")
    assert project.runs("c0") == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from orchestrator.cli import app;"
         " sys.argv = ['window', 'fleet', '--help'];"
         " import contextlib\nwith contextlib.suppress(SystemExit): app.main()\n"
         "print('celery' in sys.modules)"], capture_output=True, text=True, check=True,
        env=project.env)
    assert loaded.stdout.strip().endswith("False"), loaded.stdout + loaded.stderr


def test_status_and_abort_of_a_celery_fleet_mid_wave(make_fleet: Any, queues: Any) -> None:
    """One worker taking one window at a time: t1 migrates, t2 waits in the queue. The abort
    rolls t1 back; the worker then takes t2's task and leaves it: the fleet run is over."""
    project = make_fleet("c0", "t1", "t2", "t3")
    hold = (' && db=$(psql -X -At -c "SELECT current_database()" "$DATABASE_URL")'
            f' && if [ "$db" != "{project.db("c0")}" ]; then touch "migrating.$db"'
            " && sleep 60; fi")
    celery_project(project, "redis", migrate='psql -X -q -v ON_ERROR_STOP=1 -f migration.sql'
                   ' "$DATABASE_URL"' + hold)
    queues.append(("redis", project.queue))  # type: ignore[attr-defined]
    before = demo.fingerprint(project.url("t1"))
    worker(project, "worker-a")
    submitter = submit(project)
    deadline = time.monotonic() + 60
    while not (project.root / "project" / f"migrating.{project.db('t1')}").exists():
        assert submitter.poll() is None and time.monotonic() < deadline, \
            project.output("submitter")
        time.sleep(0.1)

    facts = project.status()

    states = {t["name"]: t["state"] for t in facts["targets"]}
    assert (facts["state"], facts["wave"]) == ("running", 1)
    assert states == {"c0": "completed", "t1": "migrate", "t2": "pending", "t3": "pending"}

    aborted = project.fleet("abort", "fleet.toml", "--confirm", demo.PHRASE)

    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert finished(project, submitter, "submitter") == 1, project.output("submitter")
    out = project.output("submitter")
    assert "[t2] not run by the worker: the fleet run aborted" in out
    assert "was aborted" in out and "[t3] sent" not in out
    states = {t["name"]: t["state"] for t in project.status()["targets"]}
    assert states == {"c0": "completed", "t1": "rolled_back", "t2": "pending", "t3": "pending"}
    assert demo.fingerprint(project.url("t1")) == before
    assert project.runs("t2") == [] and project.runs("t3") == []


def test_a_window_killed_under_its_worker_is_resumed_by_the_same_task(
        make_fleet: Any, queues: Any) -> None:
    project = celery_project(make_fleet("c0"), "amqp", concurrency=1, migrate=MIGRATE_ONCE)
    queues.append(("amqp", project.queue))  # type: ignore[attr-defined]
    alive = worker(project, "worker-a")
    submitter = submit(project)
    migrating(project, alive)
    [window] = windows(project)

    os.kill(window, signal.SIGKILL)  # the window alone: its worker lives on
    (project.root / "project" / "go").touch()

    assert finished(project, submitter, "submitter") == 0, project.output("submitter")
    assert "fleet_target_unfinished" in project.output("worker-a")
    [canary] = project.runs("c0")
    assert canary.state == "completed" and applied(project, "c0") == 1


def test_a_window_outliving_its_dead_worker_ends_the_fleet_run_without_an_answer(
        make_fleet: Any, queues: Any) -> None:
    """The worker dies (SIGKILL) under a window that goes on in its own session and
    completes: no worker ever answers its task (Redis keeps it until its visibility timeout,
    hours). The submitter takes the target's outcome from its journal once no process has
    held it for 15 s, and the fleet run ends."""
    project = celery_project(make_fleet("c0"), "redis", concurrency=1, migrate=MIGRATE_ONCE)
    queues.append(("redis", project.queue))  # type: ignore[attr-defined]
    first = worker(project, "worker-a")
    submitter = submit(project)
    migrating(project, first)
    assert len(windows(project)) == 1

    first.kill()  # the worker alone: its window lives on
    first.wait(timeout=10)
    (project.root / "project" / "go").touch()

    assert finished(project, submitter, "submitter", timeout=90) == 0, \
        project.output("submitter")
    out = project.output("submitter")
    fleet_run = fleet_id(out)
    assert f"fleet run {fleet_run} completed: all 1 targets." in out
    assert "fleet_target_unanswered" in out and "fleet_target_orphaned" not in out
    [canary] = project.runs("c0")
    assert canary.state == "completed" and applied(project, "c0") == 1
