"""``engine.proc``: a child's exit wakes the window through its pidfd, not a sleep; the
deadline and ``hooks.poll`` still stop it; nothing it opened (pidfd, pipes) stays open."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.engine import proc
from orchestrator.errors import Interrupted, PhaseTimeout


def open_fds() -> set[Path]:
    return set(Path("/proc/self/fd").iterdir())


def run(command: str, tmp_path: Path, seconds: float = 30,
        hooks: proc.Hooks | None = None) -> proc.Result:
    return proc.run(command, env=dict(os.environ), cwd=tmp_path, deadline=time.time() + seconds,
                    hooks=hooks or proc.Hooks())


def test_the_exit_is_watched_on_a_pidfd() -> None:
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        with proc.ExitWatch(child) as watch:
            assert watch.pidfd is not None, "this Linux has pidfds: they must be used"
            started = time.monotonic()
            watch.wait(5.0)  # returns when the child exits, long before the 5 s
            woke = time.monotonic() - started
            assert child.poll() == 0
        assert watch.pidfd is None
        assert 0.1 < woke < 2.0, woke
    finally:
        child.wait()


def test_a_wait_without_an_exit_lasts_its_time() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        with proc.ExitWatch(child) as watch:
            started = time.monotonic()
            watch.wait(0.2)
            assert time.monotonic() - started >= 0.19
            assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_output_and_exit_code_with_nothing_left_open(tmp_path: Path) -> None:
    before = open_fds()
    for _ in range(20):
        result = run("echo out; echo err >&2; exit 3", tmp_path)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert open_fds() == before, "a pidfd or a pipe stayed open"


def test_the_deadline_still_kills(tmp_path: Path) -> None:
    before = open_fds()
    started = time.monotonic()
    with pytest.raises(PhaseTimeout, match="still running at its deadline"):
        run("exec sleep 30", tmp_path, seconds=0.3)  # the group: the leader alone
    # SIGTERM ends `sleep` at once: the kill does not wait out the grace for the reaped leader.
    assert time.monotonic() - started < proc.GRACE_SECONDS
    assert open_fds() == before


def test_poll_is_asked_while_the_child_runs_and_can_stop_it(tmp_path: Path) -> None:
    asked: list[float] = []

    def poll() -> None:
        asked.append(time.monotonic())
        if len(asked) == 3:
            raise Interrupted("stop")

    with pytest.raises(Interrupted):
        run("exec sleep 30", tmp_path, hooks=proc.Hooks(poll=poll))
    assert len(asked) == 3
    assert asked[2] - asked[0] >= 2 * proc.POLL_SECONDS * 0.9
