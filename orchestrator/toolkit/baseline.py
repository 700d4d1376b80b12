"""The performance baseline: production's hot queries, measured before the banner goes up and
again in post_check, so a migration that makes them slow is rolled back like a broken one.

A migration can pass every check and still take the site down: a dropped or unusable index
turns a lookup into a scan of the whole table. Each ``[[baseline]]`` query is timed (the median
of ``runs``, after one run that warms the cache) inside a read-only transaction that is rolled
back, so a baseline never writes. The busiest statements of pg_stat_statements cannot be
timed: their texts carry ``$n`` placeholders and may be writes. They are compared by the
planner's estimated cost of their generic plan instead, which EXPLAIN computes without running
anything.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.config import BaselineSection, SqlCheck
from orchestrator.engine.context import Context
from orchestrator.engine.facts import BASELINE, BASELINE_BEFORE
from orchestrator.errors import PhaseFailed, PhaseTimeout
from orchestrator.postgres import pg
from orchestrator.redact import redact

PREPARED = "window_baseline"
SHOWN_TEXT = 120
# Planner cost units (about one sequential page read each): a smaller rise is a plan change
# on a small table, not a slowdown anyone would notice.
MIN_COST_DIFFERENCE = 100.0
# After the migration a run stops at this multiple of the allowed time (but never under
# CEILING_FLOOR_MS): a query that became a thousand times slower must fail the check by
# name, not eat post_check's whole deadline.
CEILING_FACTOR = 10.0
CEILING_FLOOR_MS = 1000.0
CANDIDATES = 200  # statements read from pg_stat_statements before filtering
STATEMENT = re.compile(  # the kind, after any leading comments
    r"^\s*(?:(?:/\*.*?\*/|--[^\n]*\n)\s*)*\(?\s*(?:select|insert|update|delete|with)\b",
    re.IGNORECASE | re.DOTALL)
# What the window, pg_dump and the migration tools send, never the application: catalog
# queries, the backup's row counts and checksums, pg_dump's sequence reads, the migration
# tools' own tables.
OWN_STATEMENT = re.compile(
    r"\b(?:pg_[a-z_]+|information_schema|_prisma_migrations|alembic_version"
    r"|flyway_schema_history)\b|hash_record_extended\(t,|hashtextextended\(t::text,"
    r"|^\s*select count\(\*\) from [\w.\"]+\s*$|^\s*select last_value, is_called from ",
    re.IGNORECASE)

Entry = dict[str, Any]


def wanted(section: BaselineSection) -> bool:
    return bool(section.queries or section.from_pg_stat_statements)


def record_before(ctx: Context, db: pg.Db) -> None:
    """Measure once per window: a resumed window keeps the measurement taken before anything
    changed, since a second one could already see the banner's quiet or a half-done step."""
    if wanted(ctx.settings.baseline) and ctx.journal.get(ctx.run_id, BASELINE_BEFORE) is None:
        ctx.journal.put(ctx.run_id, BASELINE_BEFORE, measure(ctx, db))


def measure(ctx: Context, db: pg.Db) -> dict[str, Entry]:
    """Before the migration: each configured query timed, then the busiest statements costed.
    A configured query that fails now is a configuration problem: the phase fails."""
    section = ctx.settings.baseline
    with _connect(ctx, db) as conn:
        statements = _busiest(ctx, conn, section.from_pg_stat_statements) \
            if section.from_pg_stat_statements else {}
        timed = {q.name: _time_before(ctx, conn, q.name, q.query, section.runs)
                 for q in section.queries}
    measured = timed | statements
    for name, entry in measured.items():
        ctx.log.info("baseline_measured", baseline=name, measure=entry["measure"],
                     ms=entry.get("ms"), cost=entry.get("cost"))
    return measured


def measure_again(ctx: Context, db: pg.Db, before: Mapping[str, Entry]) -> dict[str, Entry]:
    """After the migration: the same entries by their recorded text; one that no longer runs
    (or prepares) is recorded with its error."""
    section = ctx.settings.baseline
    with _connect(ctx, db) as conn:
        return {name: _again(ctx, conn, entry, _ceiling_ms(section, name, entry))
                for name, entry in before.items()}


def verify(ctx: Context, db: pg.Db) -> list[str]:
    """Measure again, compare, journal and log the comparison; one sentence per entry that
    fails the phase (slow or broken, with ``on_slowdown = "fail"``)."""
    before = ctx.journal.get(ctx.run_id, BASELINE_BEFORE)
    if before is None:
        if wanted(ctx.settings.baseline):
            ctx.log.warning("baseline_not_measured",
                            reason="no measurement from before the migration in the journal")
        return []
    result = compare(before, measure_again(ctx, db, before), ctx.settings.baseline)
    ctx.journal.put(ctx.run_id, BASELINE, result)
    failures = []
    for name, entry in result.items():
        ctx.log.info("baseline_compared", baseline=name, **entry)
        if flagged(entry) and entry["on_slowdown"] == "fail":
            failures.append(describe(name, entry))
        elif flagged(entry):
            ctx.log.warning("baseline_slowdown_accepted", baseline=name,
                            detail=describe(name, entry))
    return failures


# comparing ------------------------------------------------------------------------------------


def compare(before: Mapping[str, Entry], after: Mapping[str, Entry],
            section: BaselineSection) -> dict[str, Entry]:
    """Each measured entry before against after: its ratio, and whether it counts as slow
    (over its ``max_slowdown`` and, for timed entries, by at least ``min_difference_ms``)."""
    return {name: _compare_one(name, entry, after.get(name, {"error": "not measured again"}),
                               section)
            for name, entry in before.items()}


def _policy(section: BaselineSection, name: str) -> tuple[float, str]:
    """An entry's ``max_slowdown`` and ``on_slowdown``: its own, else the section's."""
    query = next((q for q in section.queries if q.name == name), None)
    return ((query.max_slowdown if query else None) or section.max_slowdown,
            (query.on_slowdown if query else None) or section.on_slowdown)


def _compare_one(name: str, before: Entry, after: Entry, section: BaselineSection) -> Entry:
    limit, policy = _policy(section, name)
    if before["measure"] == "plan_cost" and after.get("error"):
        # A statement picked from pg_stat_statements may be one the migration retires on
        # purpose (expand/contract drops a column the old code read): worth a warning only.
        policy = "warn"
    common = {"max_slowdown": limit, "on_slowdown": policy, "error": after.get("error")}
    if before["measure"] == "plan_cost":
        return {**_by_cost(before["cost"], after.get("cost"), limit),
                "query": _shorten(before["query"]), **common}
    return {**_by_time(before["ms"], after.get("ms"), limit, section.min_difference_ms),
            "cut_short": bool(after.get("cut_short")), **common}


def _by_time(before_ms: float, after_ms: float | None, limit: float, floor_ms: float) -> Entry:
    ratio = _ratio(before_ms, after_ms)
    slow = after_ms is not None and ratio is not None and ratio > limit \
        and after_ms - before_ms >= floor_ms
    return {"measure": "time", "before_ms": round(before_ms, 3),
            "after_ms": None if after_ms is None else round(after_ms, 3),
            "ratio": ratio, "slow": slow}


def _by_cost(before_cost: float, after_cost: float | None, limit: float) -> Entry:
    ratio = _ratio(before_cost, after_cost)
    slow = after_cost is not None and ratio is not None and ratio > limit \
        and after_cost - before_cost >= MIN_COST_DIFFERENCE
    return {"measure": "plan_cost", "before_ms": None, "after_ms": None,
            "before_cost": before_cost, "after_cost": after_cost, "ratio": ratio, "slow": slow}


def _ratio(before: float, after: float | None) -> float | None:
    return None if after is None else round(after / max(before, 0.001), 2)


def flagged(entry: Entry) -> bool:
    return bool(entry["slow"] or entry["error"])


def describe(name: str, entry: Entry) -> str:
    """The entry's verdict as the phase's error names it."""
    if entry["error"]:
        return f'baseline "{name}" no longer runs after the migration: {entry["error"]}'
    limit = f'(max {entry["max_slowdown"]:g}x)'
    if entry["measure"] == "plan_cost":
        return (f'baseline "{name}" ({entry["query"]}) is planned at cost'
                f' {entry["after_cost"]:.1f}, {entry["ratio"]:.1f}x its {entry["before_cost"]:.1f}'
                f" before the migration {limit}")
    over = "over " if entry["cut_short"] else ""
    return (f'baseline "{name}" took {over}{entry["after_ms"]:.1f} ms, {over}{entry["ratio"]:.1f}x'
            f' its {entry["before_ms"]:.1f} ms before the migration {limit}')


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_TEXT else flat[:SHOWN_TEXT - 3] + "..."


# measuring ------------------------------------------------------------------------------------


class _CutShort(Exception):
    """A run reached its ceiling; ``ms`` is how long it ran: a lower bound."""

    def __init__(self, ms: float) -> None:
        super().__init__(f"{ms:.1f} ms")
        self.ms = ms


@contextlib.contextmanager
def _connect(ctx: Context, db: pg.Db) -> Iterator[psycopg.Connection[Any]]:
    with ctx.connect(db) as conn:
        # psycopg would prepare a query run five times: the later runs would time another path.
        conn.prepare_threshold = None
        yield conn


@contextlib.contextmanager
def _read_only(ctx: Context, conn: psycopg.Connection[Any],
               ceiling_ms: float | None = None) -> Iterator[None]:
    """A read-only transaction, always rolled back, bounded by the phase's remaining time."""
    timeout_ms = ctx.remaining() * 1000
    if ceiling_ms is not None:
        timeout_ms = min(timeout_ms, ceiling_ms)
    conn.execute("BEGIN READ ONLY")
    try:
        conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_ms))}")
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _time_before(ctx: Context, conn: psycopg.Connection[Any], name: str, query: str,
                 runs: int) -> Entry:
    try:
        _plan_cost(ctx, conn, query)  # one plannable statement: none can end the transaction
        ms = _median_ms(ctx, conn, query, runs, None)
    except psycopg.Error as exc:
        raise PhaseFailed(f'baseline "{name}" failed before the migration ({_first_line(exc)});'
                          " fix its query in [[baseline]]") from exc
    return {"measure": "time", "query": query, "ms": round(ms, 3)}


def _again(ctx: Context, conn: psycopg.Connection[Any], entry: Entry, ceiling_ms: float
           ) -> Entry:
    ctx.poll()
    try:
        if entry["measure"] == "plan_cost":
            return {"cost": _plan_cost(ctx, conn, entry["query"])}
        runs = ctx.settings.baseline.runs
        return {"ms": _median_ms(ctx, conn, entry["query"], runs, ceiling_ms)}
    except _CutShort as cut:
        return {"ms": cut.ms, "cut_short": True}
    except psycopg.Error as exc:
        return {"error": _first_line(exc)}


def _ceiling_ms(section: BaselineSection, name: str, entry: Entry) -> float:
    limit, _ = _policy(section, name)
    return max(CEILING_FLOOR_MS, float(entry.get("ms") or 0) * limit * CEILING_FACTOR)


def _median_ms(ctx: Context, conn: psycopg.Connection[Any], query: str, runs: int,
               ceiling_ms: float | None) -> float:
    _run_ms(ctx, conn, query, ceiling_ms)  # warms the cache; its time is not counted
    return statistics.median(_run_ms(ctx, conn, query, ceiling_ms) for _ in range(runs))


def _run_ms(ctx: Context, conn: psycopg.Connection[Any], query: str,
            ceiling_ms: float | None) -> float:
    """One run's wall time in ms, the transaction's own round trips left out."""
    ctx.poll()
    started = time.perf_counter()
    try:
        with _read_only(ctx, conn, ceiling_ms):
            started = time.perf_counter()
            conn.execute(query).fetchall()
            elapsed_ms = (time.perf_counter() - started) * 1000
    except psycopg.errors.QueryCanceled as exc:
        _raise_if_out_of_time(ctx, exc, ceiling_ms is None)
        raise _CutShort((time.perf_counter() - started) * 1000) from exc
    return elapsed_ms


def _raise_if_out_of_time(ctx: Context, exc: psycopg.errors.QueryCanceled,
                          no_ceiling: bool = False) -> None:
    """A cancelled query is a signal (``poll`` raises), the phase's deadline, or a ceiling."""
    ctx.poll()
    if no_ceiling or ctx.remaining() <= 0:
        raise PhaseTimeout("the performance baseline ran out of the phase's time") from exc


def _first_line(exc: BaseException) -> str:
    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


# pg_stat_statements ---------------------------------------------------------------------------


def _busiest(ctx: Context, conn: psycopg.Connection[Any], count: int) -> dict[str, Entry]:
    """This database's ``count`` busiest statements by total time that the application sent
    and that still prepare, each with the cost of its generic plan."""
    schema = _extension_schema(conn)
    if schema is None:
        ctx.log.warning("baseline_pg_stat_statements_missing",
                        reason="the pg_stat_statements extension is not installed in this"
                               " database; only the [[baseline]] queries are measured")
        return {}
    try:
        rows = _top_statements(conn, schema)
        own = _own_query_ids(ctx, conn)
    except psycopg.Error as exc:
        ctx.log.warning("baseline_pg_stat_statements_unreadable", error=_first_line(exc))
        return {}
    chosen: dict[str, Entry] = {}
    for queryid, text in rows:
        if len(chosen) == count:
            break
        if queryid not in own and is_application_statement(text):
            with contextlib.suppress(psycopg.Error):
                chosen[f"pg_stat_statements:{queryid}"] = {
                    "measure": "plan_cost", "query": text, "cost": _plan_cost(ctx, conn, text)}
    return chosen


def _extension_schema(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n"
                       " ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
                       ).fetchone()
    return str(row[0]) if row else None


def _top_statements(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    total = "total_exec_time" if pg.server_major(conn) >= 13 else "total_time"
    query = sql.SQL(
        "SELECT queryid, min(query) FROM {}.pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND queryid IS NOT NULL GROUP BY queryid ORDER BY sum({}) DESC LIMIT {}"
    ).format(sql.Identifier(schema), sql.Identifier(total), CANDIDATES)
    return [(int(queryid), str(text)) for queryid, text in conn.execute(query).fetchall()]


def is_application_statement(text: str) -> bool:
    """A query or a write the application sent; a ``;`` left in a normalized text (whose
    literals are all ``$n``) could only join a second statement."""
    body = text.strip().rstrip(";")
    return bool(STATEMENT.match(body)) and not OWN_STATEMENT.search(body) and ";" not in body


def _own_query_ids(ctx: Context, conn: psycopg.Connection[Any]) -> set[int]:
    """The query ids of the SQL the window itself sends (baseline queries, SQL checks): EXPLAIN
    VERBOSE names them without running anything."""
    texts = [q.query for q in ctx.settings.baseline.queries]
    texts += [c.query for c in ctx.settings.checks if isinstance(c, SqlCheck)]
    found: set[int] = set()
    for text in texts:
        with contextlib.suppress(psycopg.Error), _read_only(ctx, conn):
            row = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {text}", binary=True).fetchone()
            if row and "Query Identifier" in row[0][0]:
                found.add(int(row[0][0]["Query Identifier"]))
    return found


def _plan_cost(ctx: Context, conn: psycopg.Connection[Any], text: str) -> float:
    """The estimated total cost of the statement's generic plan. EXPLAIN without ANALYZE plans
    but never executes; NULL stands for every parameter since a generic plan ignores them.
    PREPARE goes by the extended protocol (``binary=True``), which refuses a second statement
    (a ``COMMIT; ...`` would end the read-only transaction). The prepared statement outlives
    the rolled-back transaction, so it is deallocated."""
    try:
        with _read_only(ctx, conn):
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE {PREPARED} AS {text.strip().rstrip(';')}", binary=True)
            row = conn.execute("SELECT cardinality(parameter_types) FROM pg_prepared_statements"
                               " WHERE name = %s", (PREPARED,)).fetchone()
            nulls = ", ".join(["NULL"] * int(row[0] if row else 0))
            args = f"({nulls})" if nulls else ""
            plan = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {PREPARED}{args}").fetchone()
    except psycopg.errors.QueryCanceled as exc:
        _raise_if_out_of_time(ctx, exc)
        raise
    finally:
        _deallocate(conn)
    return float(plan[0][0]["Plan"]["Total Cost"]) if plan else 0.0


def _deallocate(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        if conn.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s",
                        (PREPARED,)).fetchone():
            conn.execute(f"DEALLOCATE {PREPARED}")
