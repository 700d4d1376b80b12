"""structlog, configured once: readable lines for the engineer, JSON lines for the audit trail.

Every event passes the redaction processor before either renderer sees it, so a password
can reach neither the terminal nor ``audit.jsonl``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from orchestrator.redact import redact_value

EventDict = MutableMapping[str, Any]


def _redact_event(_logger: object, _name: str, event: EventDict) -> EventDict:
    for key, value in list(event.items()):
        event[key] = redact_value(value)
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


def configure(stream: TextIO | None = None) -> None:
    """Console lines on stderr (colour only on a terminal), audit lines once a trail is open."""
    out = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _timestamp,
            structlog.processors.format_exc_info,  # tracebacks become text, then get redacted
            _redact_event,
            audit,
            _console_view,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False, key="time"),
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(),
                timestamp_key="time",
                pad_event_to=24,
                exception_formatter=structlog.dev.plain_traceback,  # never show locals: URLs
            ),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get() -> Any:
    return structlog.get_logger()
