from __future__ import annotations

import pytest
from transitions import MachineError

from orchestrator.engine import machine
from orchestrator.engine.machine import State


def walk(*triggers: str, start: str = State.PREFLIGHT) -> str:
    window = machine.build(start)
    for trigger in triggers:
        window.fire(trigger)
    return str(window.state)


def test_happy_path_visits_every_phase_in_order() -> None:
    window = machine.build()
    seen = [str(window.state)]
    while window.state not in machine.TERMINAL:
        seen.append(window.fire("succeeded"))
    assert seen == ["preflight", "staging_dry_run", "backup", "banner_on", "migrate",
                    "post_check", "banner_off", "completed"]


@pytest.mark.parametrize("start", ["preflight", "staging_dry_run", "backup", "banner_on"])
@pytest.mark.parametrize("trigger", ["failed", "timed_out"])
def test_failure_before_production_changes_aborts(start: str, trigger: str) -> None:
    assert walk(trigger, start=start) == "aborted"


@pytest.mark.parametrize("start", ["migrate", "post_check"])
@pytest.mark.parametrize("trigger", ["failed", "timed_out", "abort"])
def test_failure_after_the_banner_rolls_back(start: str, trigger: str) -> None:
    assert walk(trigger, "succeeded", "succeeded", start=start) == "rolled_back"


def test_abort_before_the_banner_just_stops_and_after_it_rolls_back() -> None:
    assert walk("abort", start="backup") == "aborted"
    assert walk("abort", start="banner_on") == "rollback"


@pytest.mark.parametrize(("start", "trigger"), [("banner_off", "failed"),
                                                ("rollback", "failed"),
                                                ("rollback", "timed_out"),
                                                ("rollback_banner_off", "failed")])
def test_failed_recovery_needs_attention(start: str, trigger: str) -> None:
    assert walk(trigger, start=start) == "needs_attention"


def test_no_shortcuts() -> None:
    window = machine.build()
    assert not hasattr(window, "to_completed")
    with pytest.raises(MachineError):
        machine.build("completed").fire("succeeded")
    with pytest.raises(MachineError):
        machine.build("rollback").fire("abort")
    assert not machine.can("rollback", "abort")
    assert machine.can("migrate", "abort")


def test_exit_codes_cover_every_terminal_state() -> None:
    assert set(machine.EXIT_CODES) == machine.TERMINAL
    assert machine.EXIT_CODES[State.ROLLED_BACK] == 1
    assert machine.EXIT_CODES[State.NEEDS_ATTENTION] == 4


def test_after_banner_order_raises_the_banner_before_the_backup() -> None:
    assert machine.forward("after_banner")[2:4] == ["banner_on", "backup"]
    window = machine.build("preflight", "after_banner")
    seen = [str(window.state)]
    while window.state not in machine.TERMINAL:
        seen.append(window.fire("succeeded"))
    assert seen[2:5] == ["banner_on", "backup", "migrate"]


@pytest.mark.parametrize("when", ["before_banner", "after_banner"])
def test_nothing_before_migrate_rolls_back_when_it_fails(when: str) -> None:
    for state in machine.forward(when)[:4]:
        assert machine.destination(state, "failed", when) == "aborted"
        assert machine.destination(state, "stuck", when) == "needs_attention"


def test_abort_rolls_back_only_once_a_backup_exists() -> None:
    assert machine.destination("banner_on", "abort", "before_banner") == "rollback"
    assert machine.destination("banner_on", "abort", "after_banner") == "aborted"
    assert machine.destination("backup", "abort", "after_banner") == "aborted"
    assert machine.destination("migrate", "abort", "after_banner") == "rollback"
