"""The engine with FakePhase standing in for every phase: a real journal, no services."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.engine.context import Context
from orchestrator.engine.journal import Journal
from orchestrator.engine.machine import PHASES
from orchestrator.engine.phase import FakePhase, PhaseResult, Registry
from orchestrator.engine.runner import Runner, Signals
from orchestrator.errors import PhaseFailed, PhaseTimeout
from orchestrator.postgres import pg
from tests.support.settings import make_settings

Handler = Callable[[Context], PhaseResult]


def ok(_ctx: Context) -> PhaseResult:
    return PhaseResult("fine")


def engine(tmp_path: Path, when: str = "before_banner", **handlers: Handler
           ) -> tuple[Runner, Journal]:
    settings = make_settings(tmp_path, timeouts={"migrate": "1s"},
                             monitor={"enabled": False})  # no server behind these fake phases
    journal = Journal.open(tmp_path / ".window")
    journal.create_run("r1", [str(p) for p in PHASES], {"backup_when": when})
    registry = Registry([FakePhase(str(name), handlers.get(str(name), ok)) for name in PHASES])
    ctx = Context(settings=settings, journal=journal, run_id="r1",
                  target=pg.Db.from_url("postgresql://u:pw@h/prod"),
                  staging=pg.Db.from_url("postgresql://u:pw@h/staging"))
    return Runner(ctx, registry, Signals()), journal


def statuses(journal: Journal) -> dict[str, str]:
    return {p.name: p.status for p in journal.phases("r1")}


def test_all_phases_succeed(tmp_path: Path) -> None:
    runner, journal = engine(tmp_path)
    assert runner.drive() == "completed"
    assert statuses(journal)["rollback"] == "skipped"
    transitions = journal.events("r1", "transition")
    assert [e["detail"]["to"] for e in transitions][-1] == "completed"


def test_failed_migration_takes_the_rollback_branch(tmp_path: Path) -> None:
    def broken(_ctx: Context) -> PhaseResult:
        raise PhaseFailed("relation already exists")

    runner, journal = engine(tmp_path, migrate=broken)
    assert runner.drive() == "rolled_back"
    assert statuses(journal)["migrate"] == "failed"
    assert journal.phase("r1", "migrate").error == "relation already exists"
    assert statuses(journal)["post_check"] == "skipped"


def test_a_bug_in_a_phase_still_rolls_back(tmp_path: Path) -> None:
    def buggy(_ctx: Context) -> PhaseResult:
        raise KeyError("oops")

    runner, journal = engine(tmp_path, post_check=buggy)
    assert runner.drive() == "rolled_back"
    assert "KeyError" in (journal.phase("r1", "post_check").error or "")


def test_timeout_and_failed_rollback_need_attention(tmp_path: Path) -> None:
    def slow(_ctx: Context) -> PhaseResult:
        raise PhaseTimeout("too slow")

    def no_restore(_ctx: Context) -> PhaseResult:
        raise PhaseFailed("disk full")

    runner, journal = engine(tmp_path, migrate=slow, rollback=no_restore)
    assert runner.drive() == "needs_attention"
    assert statuses(journal)["migrate"] == "timed_out"
    assert statuses(journal)["rollback_banner_off"] == "skipped"


def test_abort_request_is_noticed_while_a_phase_polls(tmp_path: Path) -> None:
    def waits_for_abort(ctx: Context) -> PhaseResult:
        ctx.journal.request_abort(ctx.run_id)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            ctx.poll()
            time.sleep(0.05)
        return PhaseResult("never aborted")

    runner, journal = engine(tmp_path, migrate=waits_for_abort)
    assert runner.drive() == "rolled_back"
    assert "aborted by the operator" in (journal.phase("r1", "migrate").error or "")


def test_forward_deadline_survives_a_restart(tmp_path: Path) -> None:
    runner, journal = engine(tmp_path)
    journal.conclude_phase("r1", "banner_on", "succeeded", None, trigger="succeeded",
                           state="migrate")
    journal.start_phase("r1", "migrate", time.time() - 1, 1)  # a crash left it running
    assert runner.drive() == "rolled_back"
    assert statuses(journal)["migrate"] == "timed_out"


def test_registry_refuses_a_name_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        Registry([FakePhase("migrate", ok), FakePhase("migrate", ok)])


def test_the_order_the_window_started_with_survives_a_config_change(tmp_path: Path) -> None:
    seen: list[str] = []

    def record(ctx: Context) -> PhaseResult:
        seen.append(ctx.phase)
        return PhaseResult()

    runner, _journal = engine(tmp_path, "after_banner", banner_on=record, backup=record)
    assert runner.base.settings.backup.when == "before_banner"  # the config says otherwise
    assert runner.drive() == "completed"
    assert seen == ["banner_on", "backup"]
