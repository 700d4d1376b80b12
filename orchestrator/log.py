"""structlog, configured once: readable lines for the engineer, JSON lines for the audit trail.

Every event passes the redaction processor before either renderer sees it, so a password
can reach neither the terminal nor ``audit.jsonl``. ``--json-logs`` swaps the readable lines
for the audit events themselves, one JSON object per line on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from orchestrator.redact import redact_value

EventDict = MutableMapping[str, Any]
Logger = structlog.typing.FilteringBoundLogger  # what get_logger returns, as configured


def _redact_event(_logger: object, _name: str, event: EventDict) -> EventDict:
    """Passwords out of every value; an enum (an exit code, a phase status) as its plain
    value, as a person reads it and as the audit's JSON holds it."""
    for key, value in list(event.items()):
        event[key] = redact_value(value.value if isinstance(value, Enum) else value)
    return event


def _timestamp(_logger: object, _name: str, event: EventDict) -> EventDict:
    event.setdefault("at", datetime.now(UTC).isoformat(timespec="milliseconds"))
    return event


_AUDIT_ONLY = ("at", "user", "host", "git_commit", "run_id", "cli_command")


def _console_view(_logger: object, _name: str, event: EventDict) -> EventDict:
    """The terminal needs the story, not the who-and-where every line of the audit carries."""
    for key in _AUDIT_ONLY:
        event.pop(key, None)
    return event


class AuditTrail:
    """Appends every event, as one JSON line, to the state folder's audit log."""

    def __init__(self) -> None:
        self._file: TextIO | None = None
        self._lock = threading.Lock()  # the monitor's thread logs too

    def open(self, path: Path) -> None:
        self.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __call__(self, _logger: object, name: str, event: EventDict) -> EventDict:
        line = json.dumps({"level": name, **event}, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
        return event


audit = AuditTrail()


class _Stderr:
    """Whatever ``sys.stderr`` is at the moment of writing: the live panel swaps in a proxy
    that prints lines above itself, and the log must follow it there."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_stderr = cast("TextIO", _Stderr())


@dataclass
class _Console:
    json_lines: bool = False


console = _Console()


def panel_wanted() -> bool:
    """The live panel replaces the lines only where a person watches a terminal that may
    have colour; ``--json-logs`` asked for lines a program reads."""
    return not console.json_lines and colour_wanted(sys.stderr)


def colour_wanted(out: TextIO) -> bool:
    """A terminal, and the person at it has not asked for plain text (no-color.org)."""
    return out.isatty() and not os.environ.get("NO_COLOR")


def configure(stream: TextIO | None = None, *, json_lines: bool = False) -> None:
    """Console lines on stderr (colour only on a terminal), audit lines once a trail is open;
    ``json_lines``: the audit events on stderr instead of the readable lines."""
    out = stream or sys.stderr
    console.json_lines = json_lines
    renderer: list[Any] = [structlog.processors.add_log_level,
                           structlog.processors.JSONRenderer(default=str, ensure_ascii=False)] \
        if json_lines else [
            _console_view,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False, key="time"),
            structlog.dev.ConsoleRenderer(
                colors=colour_wanted(out),
                timestamp_key="time",
                pad_event_to=24,
                exception_formatter=structlog.dev.plain_traceback,  # never show locals: URLs
            ),
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _timestamp,
            structlog.processors.format_exc_info,  # tracebacks become text, then get redacted
            _redact_event,  # before the trail and before either renderer
            audit,
            *renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=_stderr if stream is None else out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=False,
    )


def get() -> Logger:
    """The logger every module logs through: what ``configure`` set up, typed."""
    return cast("Logger", structlog.get_logger())
