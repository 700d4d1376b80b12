"""``report.html``: the window's record as one self-contained page.

Inline CSS and SVG only: no script, no font, no image fetched from anywhere, so the file can
be attached to a ticket and opened years later. Every text is escaped on its way in. The
timeline (``<svg id="timeline">``) draws each phase's actual duration as a bar, its timeout as
an outline and its expectation (rehearsal, else the runbook's timeline) as a tick, on a
logarithmic axis: a 0.2 s banner and a 15 min rehearsal must both be visible.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from string import Template
from typing import Any

from orchestrator.engine import eta
from orchestrator.engine.rows import PhaseStatus
from orchestrator.reporting.sections import Section, exit_text, headline, sections

BAR_COLOURS = {PhaseStatus.SUCCEEDED: "#2e7d32", PhaseStatus.FAILED: "#c62828",
               PhaseStatus.TIMED_OUT: "#ad1457", PhaseStatus.RUNNING: "#ef6c00",
               PhaseStatus.INTERRUPTED: "#ef6c00", PhaseStatus.ABORTED: "#ef6c00"}
EXPECTED_COLOUR = "#1565c0"
TIMEOUT_COLOUR = "#8d8d8d"
SERIES = (("connections", "connections", "#37474f"), ("active", "active", "#00838f"),
          ("waiting", "waiting on a lock", "#d84315"), ("longest_s", "longest query",
                                                        "#6a1b9a"))
BAD = frozenset({"failed", "FAILED", "timed_out", "interrupted", "SLOW", "BROKEN",
                 "needs_attention"})
# Timeline geometry, in px.
LABEL_W, CHART_W, TEXT_W, ROW_H, BAR_H, AXIS_H = 170, 560, 250, 30, 14, 28
TICKS = ((1, "1s"), (10, "10s"), (60, "1m"), (600, "10m"), (3600, "1h"), (36000, "10h"))

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121;
       margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
       border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.outcome { font-size: 16px; margin: 0 0 16px; } .bad { color: #b71c1c; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px;
       border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td { white-space: nowrap; } td.long { white-space: normal; }
td.label { font-weight: 600; }
svg text { font: 11px system-ui, sans-serif; fill: #424242; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } .note { color: #616161; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
</style></head>
<body>
<h1>$title</h1>
<p class="outcome">$outcome</p>
$body
</body></html>
""")


def render(facts: dict[str, Any]) -> str:
    parts = []
    for section in sections(facts):
        parts.append(_section(section))
        if section.title == "Summary":
            parts.append(f"<h2>Timeline</h2>\n{timeline(facts)}")
        if section.title == "Monitoring":
            parts.append(sparklines(facts["monitor"]))
    state = facts["state"]
    outcome = (f'<span class="{"bad" if state in BAD or facts["interrupted"] else ""}">'
               f"{_e(state)}</span>, exit code {_e(exit_text(facts))}")
    return PAGE.substitute(title=_e(headline(facts)), outcome=outcome, body="\n".join(parts))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _section(section: Section) -> str:
    lines = [f"<h2>{_e(section.title)}</h2>"]
    if section.note:
        lines.append(f'<p class="note">{_e(section.note)}</p>')
    if not section.rows:
        return "\n".join(lines)
    lines.append("<table>")
    if section.header:
        lines.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in section.header) + "</tr>")
    for row in section.rows:
        cells = [f'<td class="label">{_e(row[0])}</td>' if not section.header else _cell(row[0]),
                 *(_cell(cell) for cell in row[1:])]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _cell(text: str) -> str:
    kind = "bad" if text in BAD else "long" if len(text) > 40 else ""
    return f'<td class="{kind}">{_e(text)}</td>' if kind else f"<td>{_e(text)}</td>"


# the timeline ---------------------------------------------------------------------------------


def timeline(facts: dict[str, Any]) -> str:
    phases, expected = facts["phases"], facts["expected"]
    longest = max([1.0, *(v for p in phases for v in (p["duration_s"], p["timeout_s"],
                                                       expected.get(p["name"])) if v)])
    width = LABEL_W + CHART_W + TEXT_W
    height = AXIS_H + ROW_H * len(phases) + 34
    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}"'
             f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
             ' aria-label="each phase: actual duration, timeout and expectation">',
             *_axis(longest, height)]
    for row, phase in enumerate(phases):
        parts += _phase_row(phase, expected.get(phase["name"]), longest,
                            AXIS_H + row * ROW_H)
    parts += _legend(height - 14)
    return "\n".join([*parts, "</svg>"])


def _x(seconds: float, longest: float) -> float:
    return LABEL_W + CHART_W * math.log10(1 + seconds) / math.log10(1 + longest)


def _axis(longest: float, height: float) -> list[str]:
    parts = []
    for seconds, label in ((0, "0"), *TICKS):
        if seconds > longest:
            break
        x = _x(seconds, longest)
        parts += [f'<line x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height - 30}"'
                  ' stroke="#e0e0e0"/>',
                  f'<text x="{x:.1f}" y="{AXIS_H - 10}" text-anchor="middle">{label}</text>']
    return parts


def _phase_row(phase: dict[str, Any], expected: float | None, longest: float, top: float
               ) -> list[str]:
    y = top + (ROW_H - BAR_H) / 2
    name, status = phase["name"], phase["status"]
    parts = [f'<text x="{LABEL_W - 8}" y="{y + BAR_H - 3:.1f}" text-anchor="end">'
             f"{_e(name)}</text>"]
    if timeout := phase["timeout_s"]:
        outline = _x(timeout, longest) - LABEL_W
        parts.append(f'<rect x="{LABEL_W}" y="{y - 3:.1f}" width="{outline:.1f}"'
                     f' height="{BAR_H + 6}" fill="none" stroke="{TIMEOUT_COLOUR}"'
                     f' stroke-dasharray="4 3"><title>timeout {_e(eta.shown(timeout))}</title>'
                     "</rect>")
    if (took := phase["duration_s"]) is not None:
        colour = BAR_COLOURS.get(status, "#757575")
        width = max(_x(took, longest) - LABEL_W, 3.0)
        parts.append(f'<rect class="bar" x="{LABEL_W}" y="{y:.1f}" width="{width:.1f}"'
                     f' height="{BAR_H}" fill="{colour}"><title>{_e(name)} {_e(status)} in'
                     f" {_e(eta.shown(took))}</title></rect>")
    if expected is not None and status != PhaseStatus.SKIPPED:
        x = _x(expected, longest)
        parts.append(f'<path d="M{x:.1f} {y - 6:.1f} l-4 -5 h8 z M{x:.1f} {y - 6:.1f}'
                     f' v{BAR_H + 12}" fill="{EXPECTED_COLOUR}" stroke="{EXPECTED_COLOUR}"'
                     f' stroke-width="2"><title>expected {_e(eta.shown(expected))}</title>'
                     "</path>")
    fill = ' fill="#b71c1c"' if status in BAD else ""
    parts.append(f'<text x="{LABEL_W + CHART_W + 10}" y="{y + BAR_H - 3:.1f}"{fill}>'
                 f"{_e(_row_text(phase, expected))}</text>")
    return parts


def _row_text(phase: dict[str, Any], expected: float | None) -> str:
    took = phase["duration_s"]
    if took is None:
        return str(phase["status"])
    text = f"{eta.shown(took)}"
    if phase["timeout_s"]:
        text += f" of {eta.shown(phase['timeout_s'])}"
    if expected is not None:
        text += f", expected {eta.shown(expected)}"
    return text if phase["status"] == PhaseStatus.SUCCEEDED else f"{text} ({phase['status']})"


def _legend(y: float) -> list[str]:
    x, done = LABEL_W, BAR_COLOURS[PhaseStatus.SUCCEEDED]
    return [f'<rect x="{x}" y="{y - 9}" width="18" height="10" fill="{done}"/>',
            f'<text x="{x + 24}" y="{y}">actual</text>',
            f'<rect x="{x + 80}" y="{y - 10}" width="18" height="12" fill="none"'
            f' stroke="{TIMEOUT_COLOUR}" stroke-dasharray="4 3"/>',
            f'<text x="{x + 104}" y="{y}">timeout</text>',
            f'<path d="M{x + 175} {y - 11} v14" stroke="{EXPECTED_COLOUR}" stroke-width="2"/>',
            f'<text x="{x + 184}" y="{y}">expected (rehearsal, else the runbook)</text>',
            f'<text x="{x + 430}" y="{y}">logarithmic time axis</text>']


# monitoring -----------------------------------------------------------------------------------


def sparklines(samples: list[dict[str, Any]]) -> str:
    """One small chart per series over the sampled phases; a dashed line where the phase
    changes."""
    if not samples:
        return ""
    times = [datetime.fromisoformat(s["at"]).timestamp() for s in samples]
    charts = [_sparkline(samples, times, key, label, colour) for key, label, colour in SERIES]
    return '<div class="charts">' + "\n".join(charts) + "</div>"


def _sparkline(samples: list[dict[str, Any]], times: list[float], key: str, label: str,
               colour: str) -> str:
    width, height, pad, title_h = 220, 70, 6, 14
    values = [float(s.get(key) or 0) for s in samples]
    top, span = max([*values, 1.0]), (times[-1] - times[0]) or 1.0

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * (t - times[0]) / span

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad - title_h) * v / top

    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
    marks = "".join(f'<line x1="{x(t):.1f}" y1="{title_h}" x2="{x(t):.1f}" y2="{height - pad}"'
                    ' stroke="#bdbdbd" stroke-dasharray="2 2"/>'
                    for prev, sample, t in zip(samples, samples[1:], times[1:], strict=False)
                    if sample["phase"] != prev["phase"])
    dot = f'<circle cx="{x(times[0]):.1f}" cy="{y(values[0]):.1f}" r="2" fill="{colour}"/>' \
        if len(values) == 1 else ""
    peak = eta.shown(max(values)) if key == "longest_s" else f"{max(values):g}"
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}"'
            f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
            f' aria-label="{_e(label)}">'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#eee"/>'
            f'<text x="{pad}" y="11">{_e(label)}: peak {_e(peak)}</text>{marks}'
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            f"{dot}</svg>")
