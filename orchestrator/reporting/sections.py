"""A report's content as titled tables of plain text, so that Markdown and HTML say the same
thing: each renderer only formats these (and HTML adds its charts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.engine import eta
from orchestrator.engine.facts import recomputed_words

EXIT_MEANINGS = {
    0: "completed",
    1: "failed and rolled back: production holds the backup again",
    3: "stopped before production changed",
    4: "needs attention: a person must act",
    5: "interrupted: `window resume` continues",
}


@dataclass(frozen=True)
class Section:
    title: str
    header: tuple[str, ...]  # empty: a two-column list of facts
    rows: Sequence[tuple[str, ...]] = ()
    note: str = ""


def headline(facts: dict[str, Any]) -> str:
    state = facts["state"] + (" (interrupted)" if facts["interrupted"] else "")
    return f"window {facts['window']} {facts['run_id']}: {state}"


def exit_text(facts: dict[str, Any]) -> str:
    code = facts["exit_code"]
    return "none yet (in progress)" if code is None \
        else f"{code} ({EXIT_MEANINGS.get(code, 'unknown')})"


def sections(facts: dict[str, Any]) -> list[Section]:
    found = [summary(facts), phases(facts), migration(facts), checks(facts), *backup(facts),
             rollback(facts),
             baseline(facts), monitoring(facts), rehearsal(facts), drain(facts), driven(facts),
             contacts(facts)]
    return [s for s in found if s.rows or s.note]


def summary(facts: dict[str, Any]) -> Section:
    who = facts["who"]
    total = seconds(facts["total_s"])
    rows = [("final state", facts["state"] + (" (interrupted: `window resume` continues)"
                                              if facts["interrupted"] else "")),
            ("exit code", exit_text(facts)),
            ("target", str(facts["target"])), ("staging", str(facts["staging"])),
            ("started", _utc(facts["started_at"])), ("finished", _utc(facts["finished_at"])),
            ("total", total),
            ("confirmed by", f"{who['user'] or '?'} on {who['host'] or '?'} at"
                             f" {_utc(who['at'])}"),
            ("git commit", who["git_commit"] or "- (not recorded)")]
    rows += [("risk", risk) for risk in facts["risks"]]
    rows += [("lint warning", warning) for warning in facts["lint"]]
    return Section("Summary", (), rows)


def migration(facts: dict[str, Any]) -> Section:
    """What production's migration applied, and the tail of what its command said."""
    ran = facts.get("migration")
    if not ran:
        return Section("Migration", (), [])
    applied = ran["applied"]
    rows = [("applied", ", ".join(applied) if applied else
             "nothing new in the tool's table" if applied == [] else
             '- (tool = "none": the tool\'s table is not read)'),
            ("output (last lines)", ran["output"])]
    return Section("Migration", (), rows)


def phases(facts: dict[str, Any]) -> Section:
    expected = facts["expected"]
    rows = [(p["name"], p["status"], _when(p["started_at"]), seconds(p["duration_s"]),
             seconds(expected.get(p["name"])), seconds(p["timeout_s"]), p["error"] or "")
            for p in facts["phases"]]
    return Section("Phases", ("phase", "status", "started (UTC)", "took", "expected",
                              "timeout", "error"), rows)


def checks(facts: dict[str, Any]) -> Section:
    rows = [(c["phase"] or "-", c["name"] or "?", c["kind"] or "-",
             "passed" if c["passed"] else "FAILED", c["detail"] or "",
             seconds(c["duration_s"])) for c in facts["checks"]]
    return Section("Checks", ("phase", "check", "kind", "result", "detail", "took"), rows,
                   "" if rows else "No check ran.")


def backup(facts: dict[str, Any]) -> list[Section]:
    b = facts["backup"]
    if not b["path"] and not b["snapshot"]:
        return [Section("Backup", (), [], "No backup was taken.")]
    proof = {"restore": "restored into a standby copy and compared table by table",
             "list": "table of contents read"}.get(b["verification"] or "", "-")
    rows = [("method", b["method"]), ("archive", b["path"] or "-"),
            ("RDS snapshot", b["snapshot"] or ""), ("size", _size(b["size_bytes"])),
            ("checksum", f"sha256 {b['manifest_sha256']} (of the archive's manifest)"
             if b["manifest_sha256"] else ""),
            ("verified", f"{'yes' if b['verified'] else 'no'}: {proof}"),
            ("standby copy", b["standby"] or ""), ("S3", b["s3_uri"] or ""),
            ("compression", f"pg_dump --compress={b['compress']}" if b["compress"] else ""),
            ("recomputed by the restore", ", ".join(
                recomputed_words(v) for v in b.get("recomputed_views", [])))]
    tables = [(name, f"{t['rows']:,}", str(t.get("checksum", "-")))
              for name, t in sorted(b["tables"].items())]
    tables += [(f"{name} (materialized view)", f"{t['rows']:,}", str(t.get("checksum", "-")))
               for name, t in sorted(b.get("materialized_views", {}).items())]
    return [Section("Backup", (), [r for r in rows if r[1]]),
            Section("Backup contents", ("table", "rows", "checksum"), tables)]


def rollback(facts: dict[str, Any]) -> Section:
    rb = facts["rollback"]
    if not rb:
        return Section("Rollback", (), [])
    gap = rb.get("write_gap") or {}
    rows = [("method", rb["method"]), ("took", seconds(rb.get("duration_s"))),
            ("failed database kept as", str(rb.get("retained_database") or "-")),
            ("write gap", ", ".join(f"{t} ~{n} rows" for t, n in gap.items())
             or "none measured: no write reached production after the backup")]
    if late := rb.get("written_behind_banner"):
        rows.append(("written behind the banner (the failed migration's own included; in"
                     " the kept database, not in production)",
                     ", ".join(f"{t} ~{n} rows" for t, n in late.items())))
    if accepted := facts["accepted_loss"]:
        rows.append(("data loss accepted by", str(accepted.get("by"))))
    if rb.get("instructions"):
        rows.append(("to finish by hand", str(rb["instructions"])))
    rows += [("left behind", str(what)) for what in rb.get("left_behind") or []]
    rows += [("not undone by the restore", f"{c['what']}; undo: {c['undo']}")
             for c in rb.get("cluster_changes") or []]
    return Section("Rollback", (), rows)


def baseline(facts: dict[str, Any]) -> Section:
    rows = [_baseline_row(name, entry) for name, entry in facts["baseline"].items()]
    return Section("Baseline before / after",
                   ("entry", "measure", "before", "after", "ratio", "max", "verdict"), rows)


def _baseline_row(name: str, entry: dict[str, Any]) -> tuple[str, ...]:
    cost = entry["measure"] == "plan_cost"
    unit, key = ("", "cost") if cost else (" ms", "ms")
    before = entry.get(f"before_{key}", entry.get(key))
    after = entry.get(f"after_{key}")
    verdict = "SLOW" if entry.get("slow") else "BROKEN" if entry.get("error") else \
        "not measured after" if after is None else "ok"
    ratio = entry.get("ratio")
    return (name, "planned cost" if cost else "time", _number(before, unit),
            _number(after, unit) if after is not None else str(entry.get("error") or "-"),
            f"{ratio:.2f}x" if ratio is not None else "-",
            f"{entry['max_slowdown']:g}x" if entry.get("max_slowdown") else "-", verdict)


def monitoring(facts: dict[str, Any]) -> Section:
    samples = facts["monitor"]
    rows = []
    for phase in dict.fromkeys(s["phase"] for s in samples):
        seen = [s for s in samples if s["phase"] == phase]
        rows.append((phase, str(len(seen)), str(max(s["connections"] for s in seen)),
                     str(max(s["active"] for s in seen)), str(max(s["waiting"] for s in seen)),
                     seconds(max(s["longest_s"] for s in seen))))
    return Section("Monitoring", ("phase", "samples", "peak connections", "max active",
                                  "max waiting", "longest query"), rows)


def rehearsal(facts: dict[str, Any]) -> Section:
    rows = []
    if r := facts["rehearsal"]:
        figures = ", ".join(f"{key.removesuffix('_s')} {seconds(r[key])}"
                            for key in ("dump_s", "restore_s", "migrate_s", "checks_s")
                            if r.get(key) is not None)
        rows.append(("rehearsal", f"{r.get('mode')} on {r.get('database')}: {figures}"))
    if e := facts["eta"]:
        rows += [("expected length", f"{seconds(e['expected_s'])} (from the {e['from']})"),
                 ("window length", seconds(e["length_s"])),
                 ("point of no return", _utc(e["point_of_no_return"]))]
    return Section("Rehearsal and ETA", (), rows)


def drain(facts: dict[str, Any]) -> Section:
    d = facts["drain"]
    if not d:
        return Section("Drain", (), [])
    return Section("Drain", (), [
        ("waited", seconds(d.get("waited_s"))),
        ("sessions waited for", str(len(d.get("waited_for") or []))),
        ("sessions ended", str(len(d.get("ended") or []))),
        ("drained", "yes" if d.get("drained") else "no")])


def driven(facts: dict[str, Any]) -> Section:
    rows = [(_when(e["at"]), e["event"], f"{e['user'] or '?'}@{e['host'] or '?'}",
             f"window {e['command']}" if e["command"] else "-", e["state"] or "")
            for e in facts["driven"]]
    return Section("Who acted", ("at (UTC)", "event", "who", "command", "state"), rows)


def contacts(facts: dict[str, Any]) -> Section:
    return Section("Emergency contacts", (),
                   [(key.replace("_", " "), value)
                    for key, value in facts.get("contacts", {}).items() if value])


def _when(iso: str | None) -> str:
    return clock(iso) if iso else "-"


def _utc(iso: str | None) -> str:
    return f"{clock(iso)} UTC" if iso else "-"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    shown, index = float(size), 0
    while shown >= 1024 and index < len(units) - 1:
        shown, index = shown / 1024, index + 1
    return f"{size:,} bytes" + (f" ({shown:.1f} {units[index]})" if index else "")


def _number(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def clock(at: float | str | None) -> str:
    """A Unix time or ISO text as ``2026-11-30 08:59:45`` (UTC)."""
    if at is None:
        return "-"
    stamp = datetime.fromisoformat(at) if isinstance(at, str) else datetime.fromtimestamp(at, UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    return "-" if value is None else eta.shown(value)
