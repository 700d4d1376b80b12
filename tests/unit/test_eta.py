"""The ETA arithmetic and the timeline validation: what a rehearsal measured against the
runbook's timeline and the window's timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.engine import eta
from phases.staging import timeline_problems
from tests.support.settings import MINIMAL, make_settings

# The forward phases' defaults: 120 + 900 + 600 + 120 + 300 + 300 + 120.
DEFAULT_LENGTH = 2460.0


def load(**sections: Any) -> config.Settings:
    return make_settings(Path("/srv/app"), **sections)


def test_without_a_rehearsal_the_timeline_lower_bounds_are_expected() -> None:
    expected = eta.estimate(load())

    assert expected.phases == {
        "preflight": 10, "staging_dry_run": 600, "backup": 300, "banner_on": 10,
        "migrate": 120, "post_check": 300, "banner_off": 10}
    assert expected.expected_s == 1350
    assert expected.source == "timeline"
    assert expected.measured == frozenset()
    assert expected.length_s == DEFAULT_LENGTH
    # The rollback timeout (no restore measured) and the rollback banner's timeline figure.
    assert expected.rollback_s == 610
    assert expected.point_of_no_return_s == DEFAULT_LENGTH - 610


def test_rehearsed_figures_replace_the_timeline_where_measured() -> None:
    rehearsal = {"mode": "url", "total_s": 3.5, "migrate_s": 1.25, "checks_s": 0.5}

    expected = eta.estimate(load(), rehearsal)

    assert expected.source == "rehearsal"
    assert expected.measured == {"staging_dry_run", "migrate", "post_check"}
    assert (expected.phases["staging_dry_run"], expected.phases["migrate"],
            expected.phases["post_check"], expected.phases["backup"]) == (3.5, 1.25, 0.5, 300)
    assert expected.expected_s == 10 + 3.5 + 300 + 10 + 1.25 + 0.5 + 10
    assert expected.rollback_s == 610, "url mode measures no restore"


def test_a_clone_rehearsal_predicts_the_backup_and_the_rollback() -> None:
    rehearsal = {"mode": "clone", "total_s": 9.0, "migrate_s": 1.0, "checks_s": 0.5,
                 "dump_s": 2.0, "restore_s": 4.0}

    proven = eta.estimate(load(), rehearsal)
    listed = eta.estimate(load(backup={"verify": "list"}), rehearsal)

    assert proven.phases["backup"] == 6.0, "the dump, then the restore that proves it"
    assert listed.phases["backup"] == 2.0, "the dump alone"
    assert proven.rollback_s == 4.0 + 10
    assert proven.point_of_no_return_s == DEFAULT_LENGTH - 14


def test_no_phase_is_expected_to_outlast_its_timeout() -> None:
    settings = load(timeouts={"migrate": "30s", "staging_dry_run": "5m"})

    expected = eta.estimate(settings, {"total_s": 400.0, "migrate_s": 45.0})

    assert expected.phases["migrate"] == 30
    assert expected.phases["staging_dry_run"] == 300
    assert eta.estimate(settings).phases["migrate"] == 30, "the timeline's 2 min as well"


def test_the_window_length_and_the_point_of_no_return() -> None:
    settings = load(window={**MINIMAL["window"], "length": "1h"},
                    timeouts={"rollback": "10m", "rollback_banner_off": "5s"})

    expected = eta.estimate(settings, {"restore_s": 95.0})

    assert expected.length_s == 3600
    assert expected.rollback_s == 95 + 5, "the banner's timeline figure, capped by its timeout"
    assert expected.point_of_no_return_s == 3500


def test_a_rollback_longer_than_the_window_leaves_no_point_of_no_return() -> None:
    settings = load(window={**MINIMAL["window"], "length": "5m"})

    assert eta.estimate(settings).point_of_no_return_s == 300 - 610


def test_phases_that_ran_count_with_what_they_took() -> None:
    expected = eta.estimate(load(), {"migrate_s": 1.0}, actual={"preflight": 0.5,
                                                               "migrate": 2.5})

    assert expected.phases["preflight"] == 0.5
    assert expected.phases["migrate"] == 2.5
    assert expected.ends_s("banner_on") == 0.5 + 600 + 300 + 10


def test_the_backup_after_the_banner_changes_the_order_not_the_sum() -> None:
    before = eta.estimate(load())
    after = eta.estimate(load(backup={"when": "after_banner"}))

    assert list(after.phases)[2:4] == ["banner_on", "backup"]
    assert after.expected_s == before.expected_s
    assert after.ends_s("banner_on") == 10 + 600 + 10


@pytest.mark.parametrize(("seconds", "text"), [
    (0.42, "0.4s"), (9.96, "10s"), (45, "45s"), (125, "2m05s"), (1350, "22m30s"),
    (3730, "1h02m10s"), (-310, "-5m10s")])
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert eta.shown(seconds) == text


def test_a_migration_over_its_share_of_the_timeout_is_named_with_its_numbers() -> None:
    settings = load(timeouts={"migrate": "12s"})

    problems = timeline_problems(settings, {"migrate_s": 7.2, "checks_s": 0.1})

    assert problems == [
        "the rehearsed migration took 7.2s, 60% of the 12s migrate timeout (at most 50%:"
        " [staging] max_migrate_share); raise [timeouts] migrate or make the migration faster"]
    assert timeline_problems(settings, {"migrate_s": 6.0}) == [], "exactly half is allowed"
    assert timeline_problems(load(timeouts={"migrate": "12s"},
                                  staging={"max_migrate_share": 0.75}),
                             {"migrate_s": 7.2}) == []


def test_a_restore_longer_than_the_rollback_timeout_refuses() -> None:
    settings = load(timeouts={"rollback": "60s"})

    problems = timeline_problems(settings, {"migrate_s": 1.0, "restore_s": 75.0})

    assert problems == [
        "the rehearsed restore of production took 75.0s, more than the 60s rollback timeout:"
        " a rollback could not finish in time; raise [timeouts] rollback"]
    assert timeline_problems(settings, {"migrate_s": 1.0, "restore_s": 59.0}) == []
