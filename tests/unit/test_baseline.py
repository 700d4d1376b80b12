"""compare(): when a baseline entry counts as slow, and what the phase's error says about it."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.config import BaselineQuery, BaselineSection
from orchestrator.toolkit import baseline


def timed(ms: float) -> dict[str, Any]:
    return {"measure": "time", "query": "SELECT 1", "ms": ms}


def costed(cost: float) -> dict[str, Any]:
    return {"measure": "plan_cost", "query": "SELECT * FROM events WHERE account_id = $1",
            "cost": cost}


def section(**keys: Any) -> BaselineSection:
    return BaselineSection(queries=[BaselineQuery(name="q", query="SELECT 1")], **keys)


def test_a_timed_entry_over_its_limit_is_slow_and_fails_by_default() -> None:
    result = baseline.compare({"q": timed(2.0)}, {"q": {"ms": 84.1}}, section())

    assert result["q"] == {
        "measure": "time", "before_ms": 2.0, "after_ms": 84.1, "ratio": 42.05, "slow": True,
        "cut_short": False, "max_slowdown": 2.0, "on_slowdown": "fail", "error": None}
    assert baseline.describe("q", result["q"]) == (
        'baseline "q" took 84.1 ms, 42.0x its 2.0 ms before the migration (max 2x)')


def test_a_timed_entry_within_its_limit_is_not_slow() -> None:
    result = baseline.compare({"q": timed(20.0)}, {"q": {"ms": 39.0}}, section())

    assert result["q"]["ratio"] == 1.95
    assert not baseline.flagged(result["q"])


@pytest.mark.parametrize(("floor_ms", "slow"), [(5.0, False), (1.0, True)])
def test_a_small_absolute_difference_is_noise_whatever_the_ratio(floor_ms: float,
                                                                 slow: bool) -> None:
    result = baseline.compare({"q": timed(0.3)}, {"q": {"ms": 3.3}},
                              section(min_difference_ms=floor_ms))

    assert result["q"]["ratio"] == 11.0
    assert result["q"]["slow"] is slow


def test_an_entry_overrides_the_sections_limit_and_policy() -> None:
    settings = BaselineSection(max_slowdown=2.0, on_slowdown="fail", queries=[
        BaselineQuery(name="lenient", query="SELECT 1", max_slowdown=5.0),
        BaselineQuery(name="watched", query="SELECT 1", on_slowdown="warn")])
    before = {"lenient": timed(10.0), "watched": timed(10.0)}

    result = baseline.compare(before, {"lenient": {"ms": 40.0}, "watched": {"ms": 40.0}},
                              settings)

    assert (result["lenient"]["slow"], result["lenient"]["max_slowdown"]) == (False, 5.0)
    assert (result["watched"]["slow"], result["watched"]["on_slowdown"]) == (True, "warn")


def test_the_sections_policy_applies_to_statements_it_does_not_name() -> None:
    result = baseline.compare({"pg_stat_statements:7": costed(877.9)},
                              {"pg_stat_statements:7": {"cost": 6250.0}},
                              BaselineSection(max_slowdown=3.0, on_slowdown="warn"))

    entry = result["pg_stat_statements:7"]
    assert entry == {
        "measure": "plan_cost", "before_ms": None, "after_ms": None, "before_cost": 877.9,
        "after_cost": 6250.0, "ratio": 7.12, "slow": True, "max_slowdown": 3.0,
        "on_slowdown": "warn", "error": None,
        "query": "SELECT * FROM events WHERE account_id = $1"}
    assert baseline.describe("pg_stat_statements:7", entry) == (
        'baseline "pg_stat_statements:7" (SELECT * FROM events WHERE account_id = $1) is planned'
        " at cost 6250.0, 7.1x its 877.9 before the migration (max 3x)")


def test_a_small_rise_in_planned_cost_is_a_plan_change_not_a_slowdown() -> None:
    result = baseline.compare({"s": costed(8.3)}, {"s": {"cost": 40.0}}, BaselineSection())

    assert result["s"]["ratio"] > 2
    assert not result["s"]["slow"]


def test_a_statement_that_no_longer_prepares_is_flagged_with_its_error() -> None:
    result = baseline.compare({"s": costed(10.0)},
                              {"s": {"error": 'column "account_id" does not exist'}},
                              BaselineSection())

    assert (result["s"]["ratio"], result["s"]["slow"]) == (None, False)
    assert baseline.flagged(result["s"])
    # Picked from pg_stat_statements, perhaps retired on purpose by the migration: it warns.
    assert result["s"]["on_slowdown"] == "warn"
    assert baseline.describe("s", result["s"]) == (
        'baseline "s" no longer runs after the migration: column "account_id" does not exist')


def test_a_run_cut_short_at_its_ceiling_says_the_time_is_a_lower_bound() -> None:
    result = baseline.compare({"q": timed(2.0)}, {"q": {"ms": 1000.4, "cut_short": True}},
                              section())

    assert baseline.describe("q", result["q"]).startswith(
        'baseline "q" took over 1000.4 ms, over 500.2x its 2.0 ms')


def test_long_statement_texts_are_shortened_for_the_report() -> None:
    long = {"measure": "plan_cost", "query": "SELECT\n  " + ", ".join(["a"] * 200), "cost": 1.0}

    entry = baseline.compare({"s": long}, {"s": {"cost": 1.0}}, BaselineSection())["s"]

    assert len(entry["query"]) == baseline.SHOWN_TEXT
    assert entry["query"].startswith("SELECT a, a") and entry["query"].endswith("...")


@pytest.mark.parametrize(("text", "chosen"), [
    ("SELECT * FROM events WHERE account_id = $1", True),
    ("/* app:orders */ WITH x AS (SELECT 1) SELECT * FROM x", True),
    ("UPDATE orders SET status = $1 WHERE id = $2", True),
    ("CREATE INDEX events_account ON events(account_id)", False),
    ("COPY public.orders (id, customer) TO stdout", False),
    ("SELECT count(*) FROM public.orders", False),
    ("SELECT count(*), coalesce(sum(hash_record_extended(t, $1)), $2)::text FROM public.orders"
     " AS t", False),
    ("SELECT pid FROM pg_stat_activity WHERE application_name = $1", False),
    ("SELECT * FROM _prisma_migrations ORDER BY started_at", False),
    ("SELECT last_value, is_called FROM public.orders_id_seq", False),
    ("SELECT $1; DELETE FROM orders", False),
])
def test_only_the_applications_statements_are_chosen(text: str, chosen: bool) -> None:
    assert baseline.is_application_statement(text) is chosen
