"""``report.md``: the window's record as Markdown tables, to paste into a ticket."""

from __future__ import annotations

from typing import Any

from orchestrator.reporting.sections import Section, headline, sections


def render(facts: dict[str, Any]) -> str:
    lines = [f"# {_inline(headline(facts))}", ""]
    for section in sections(facts):
        lines += _section(section)
    return "\n".join(lines).rstrip() + "\n"


def _section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.note:
        lines += [_inline(section.note), ""]
    if not section.rows:
        return lines
    header = section.header or ("", "")
    lines.append(_row(header))
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += [_row(_bold_label(row) if not section.header else row) for row in section.rows]
    return [*lines, ""]


def _bold_label(row: tuple[str, ...]) -> tuple[str, ...]:
    return (f"**{row[0]}**", *row[1:])


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(_inline(cell) for cell in cells) + " |"


def _inline(text: str) -> str:
    """One table cell: no line break, no pipe that would split it, no tag a ticket's
    Markdown would take for HTML (a backslash-escaped ``<`` shows as itself)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "\\<")
