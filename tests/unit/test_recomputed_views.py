"""The materialized views a restore gave back with other contents, and their words: what the
backup's facts, its summary and ``window status`` say of them."""

from __future__ import annotations

from orchestrator.engine.facts import RecomputedView, recomputed_words
from orchestrator.toolkit.dumps import recomputed_views

STALE = {"public.totals": {"rows": 3, "checksum": "1"}}


def test_only_views_with_other_contents_are_recomputed() -> None:
    same = {"public.same": {"rows": 2, "checksum": "9"}}

    found = recomputed_views({**STALE, **same}, {"public.totals": {"rows": 5, "checksum": "2"},
                                                 **same})

    assert found == [{"view": "public.totals", "rows_at_backup": 3, "rows_in_copy": 5}]


def test_other_contents_in_as_many_rows_count_unless_only_rows_are_compared() -> None:
    copy = {"public.totals": {"rows": 3, "checksum": "2"}}

    assert [v["view"] for v in recomputed_views(STALE, copy)] == ["public.totals"]
    assert recomputed_views(STALE, {"public.totals": {"rows": 3}}, checksums=False) == []


def test_a_view_readable_on_one_side_only_counts() -> None:
    found = recomputed_views(STALE, {"public.new": {"rows": 1, "checksum": "4"}})

    assert found == [
        {"view": "public.new", "rows_at_backup": None, "rows_in_copy": 1},
        {"view": "public.totals", "rows_at_backup": 3, "rows_in_copy": None}]


def test_words_name_the_view_and_both_row_counts() -> None:
    def words(before: int | None, after: int | None) -> str:
        return recomputed_words(RecomputedView(view="public.totals", rows_at_backup=before,
                                               rows_in_copy=after))

    assert words(3, 5) == "public.totals (3 rows at the backup, 5 rows in the copy)"
    assert words(3, None) == "public.totals (3 rows at the backup, unreadable in the copy)"
    assert words(3, 3) == ("public.totals (3 rows at the backup and in the copy, other"
                           " contents)")
