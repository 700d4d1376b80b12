"""The comparison table: printed to the terminal and kept in BENCHMARKS.md.

Each row sets a figure from ``window`` against the raw tool it wraps and a target. A figure
that is missing (the event was not logged) reads "missing" and gets no verdict; a miss is
reported, never raised: the benchmark informs, it does not gate.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.windows import WindowResult

SECTION = "Backup and rollback"


@dataclass(frozen=True)
class Row:
    figure: str
    raw_s: float | None
    window_s: float | None
    target: str
    max_ratio: float | None = None
    max_seconds: float | None = None
    problem: str = ""  # e.g. the rollback took the wrong path

    @property
    def ratio(self) -> float | None:
        if self.raw_s and self.window_s is not None:
            return self.window_s / self.raw_s
        return None

    @property
    def verdict(self) -> str:
        if self.window_s is None:
            return "n/a"
        if self.problem:
            return f"MISS ({self.problem})"
        if self.max_ratio is not None:
            return _pass(self.ratio is not None and self.ratio <= self.max_ratio)
        if self.max_seconds is not None:
            return _pass(self.window_s < self.max_seconds)
        return "info"

    def cells(self) -> list[str]:
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        return [self.figure, seconds(self.raw_s, "-"), seconds(self.window_s), ratio,
                self.target, self.verdict]


HEADER = ["Figure", "Raw tool", "window", "Ratio", "Target", "Result"]


def _pass(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def seconds(value: float | None, absent: str = "missing") -> str:
    return f"{value:.2f} s" if value is not None else absent


def size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "missing"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} GiB"


def method_problem(window: WindowResult, expected: str) -> str:
    method = window.value("production_restored", "method")
    if method == expected:
        return ""
    return f"rolled back by {method}" if method else "method not logged"


def rows(raw_dump_s: float, raw_restore_s: float, swap: WindowResult,
         restore: WindowResult) -> list[Row]:
    """The targets: the backup phase within 1.3x of raw pg_dump plus raw pg_restore, dump and
    verification within 1.10x of raw, swap under 2 s, restore rollback within 1.15x of raw
    pg_restore."""
    table: list[Row] = []
    for window in (swap, restore):  # issue 16: the whole phase within 1.3x of the raw tools
        table.append(Row(f"backup phase (dump, figures, proof restore, comparison) vs pg_dump"
                         f" + pg_restore, {window.label} window", raw_dump_s + raw_restore_s,
                         window.phases.get("backup"), "<= 1.3x", max_ratio=1.3))
    for window in (swap, restore):
        table.append(Row(f"backup pg_dump (backup_dumped), {window.label} window", raw_dump_s,
                         window.duration("backup_dumped"), "<= 1.10x", max_ratio=1.10))
    for window in (swap, restore):
        table.append(Row(f"verification restore (backup_restored), {window.label} window",
                         raw_restore_s, window.duration("backup_restored"), "<= 1.10x",
                         max_ratio=1.10))
    for window in (swap, restore):
        table.append(Row(f"snapshot checksums (snapshot_described), {window.label} window",
                         None, window.duration("snapshot_described"), "-"))
    for window in (swap, restore):
        table.append(Row(f"checksum comparison (backup_verified), {window.label} window",
                         None, window.duration("backup_verified"), "-"))
    table.append(Row("rollback by swap (production_restored)", None,
                     swap.duration("production_restored"), "< 2 s", max_seconds=2.0,
                     problem=method_problem(swap, "swap")))
    table.append(Row("rollback by restore (production_restored)", raw_restore_s,
                     restore.duration("production_restored"), "<= 1.15x", max_ratio=1.15,
                     problem=method_problem(restore, "restore")))
    return table


def phase_rows(windows: list[WindowResult]) -> list[list[str]]:
    names: list[str] = []
    for window in windows:
        names += [n for n in window.phases if n not in names]
    return [[name, *(seconds(w.phases.get(name), "-") for w in windows)] for name in names]


def text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def markdown_section(heading: str, facts: list[str], table: list[Row],
                     windows: list[WindowResult]) -> str:
    phases_header = ["Phase", *(f"{w.label} window" for w in windows)]
    return "\n".join([
        f"## {SECTION}", "", f"### {heading}", "",
        *(f"- {fact}" for fact in facts), "",
        markdown_table(HEADER, [r.cells() for r in table]), "",
        "Phase durations from `window status --json`:", "",
        markdown_table(phases_header, phase_rows(windows)), "",
        "How to read it: the raw tools run on the same database right before the windows"
        " (pg_dump three times, the median kept; pg_restore once); on this 2-core machine a"
        " 1 GB dump or restore varies by about 10-15% from run to run. `backup_dumped` is"
        " pg_dump alone; the backup phase also checksums the snapshot"
        " (alongside the dump, in `[backup] jobs` workers importing the same snapshot), writes the"
        " manifest, and proves the archive by restoring it into the standby copy and comparing"
        " checksums. Rollback by restore compares row counts only when the archive was already"
        " proven by restore (its manifest shows it unchanged), full checksums otherwise.", "",
        "Reproduce with `make bench` (`.venv/bin/python -m bench.run`; `BENCH_GB` sets the"
        " size, default 1.0; `BENCH_ONLY=backup` runs this part alone). A miss is reported,"
        " not failed.", ""])


def dated_section(name: str, facts: list[str], header: list[str], body: list[list[str]],
                  how_to_read: str) -> str:
    """A section of BENCHMARKS.md: this run's date, its facts, its table, how to read it."""
    heading = f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return "\n".join([f"## {name}", "", f"### {heading}", "",
                      *(f"- {fact}" for fact in facts), "",
                      markdown_table(header, body), "", how_to_read, ""])


def load() -> str:
    """The load averages over 1, 5 and 15 minutes: the benches share the machine."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def path() -> Path:
    """BENCHMARKS.md, or the file ``BENCH_REPORT`` names."""
    return Path(os.environ.get("BENCH_REPORT", Path(__file__).resolve().parent.parent
                               / "BENCHMARKS.md"))


def write_section(path: Path, section: str, name: str = SECTION) -> None:
    """Replace the section headed ``## name`` of ``path`` (appended if absent), keeping every
    other section."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _match: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
