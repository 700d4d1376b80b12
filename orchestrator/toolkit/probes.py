"""Checks that look outside the database: an HTTP endpoint, and the application's logs.

Our first users' health endpoint answered 200 with ``"db": "error"`` while the database was
down, and an unbounded ``curl`` hung for minutes: an HTTP check reads the body too, every
request is bounded, and failures are retried with backoff until the check's own deadline.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from orchestrator.config import HttpCheck, LogCheck, Settings

BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0)
BODY_SHOWN = 2048  # of a failing answer's body, kept with the failure


def http_answers(check: HttpCheck, url: str, headers: dict[str, str], deadline: float
                 ) -> tuple[bool, str]:
    """Ask ``url`` (production's application, or staging's) until it passes or the check's
    deadline comes; the last answer says why not, with what its body said."""
    attempt = 0
    while True:
        passed, detail = _ask(check, url, headers, deadline)
        if passed or time.time() + BACKOFF_SECONDS[0] >= deadline:
            return passed, detail + (f" after {attempt + 1} attempts" if attempt else "")
        time.sleep(min(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)],
                       max(0.0, deadline - time.time())))
        attempt += 1


def _ask(check: HttpCheck, url: str, headers: dict[str, str], deadline: float
         ) -> tuple[bool, str]:
    request = urllib.request.Request(url, method=check.method,  # noqa: S310 - the user's
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=max(0.1, deadline - time.time())) as answer:  # noqa: S310
            status, body = answer.status, answer.read(1024 * 1024)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1024 * 1024)
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException,
            ValueError) as exc:
        return False, f"{url} did not answer: {getattr(exc, 'reason', exc)}"
    text = body.decode("utf-8", "replace")
    if status != check.expect_status:
        passed, detail = False, f"HTTP {status} (expected {check.expect_status})"
    else:
        passed, detail = _body_says_ok(check, text, status)
    return passed, detail if passed else f"{detail}; body: {_shown(text)}"


def _shown(body: str) -> str:
    """The first ``BODY_SHOWN`` characters of a body, on one line."""
    cut = " ".join(body[:BODY_SHOWN].split())
    return (cut + " ...") if len(body) > BODY_SHOWN else (cut or "(empty)")


def _body_says_ok(check: HttpCheck, body: str, status: int) -> tuple[bool, str]:
    if check.expect_body is not None and not re.search(check.expect_body, body):
        return False, f"HTTP {status}, but the body does not match {check.expect_body!r}"
    if check.expect_json:
        try:
            document = json.loads(body)
        except json.JSONDecodeError:
            return False, f"HTTP {status}, but the body is not JSON"
        wrong = {path: _dig(document, path) for path, want in check.expect_json.items()
                 if _dig(document, path) != want}
        if wrong:
            shown = ", ".join(f"{path} = {got!r} (expected {check.expect_json[path]!r})"
                              for path, got in wrong.items())
            return False, f"HTTP {status}, but {shown}"
    return True, f"HTTP {status}"


def _dig(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def log_offsets(settings: Settings) -> dict[str, dict[str, int]]:
    """For every log check, the size of each matching file now: only what is appended after
    this is read later (and a resume does not read it again)."""
    return {check.name: {str(f): f.stat().st_size for f in _files(settings, check)}
            for check in settings.checks if isinstance(check, LogCheck)}


def log_is_clean(settings: Settings, check: LogCheck, offsets: dict[str, int]) -> tuple[bool, str]:
    pattern = re.compile(check.error_pattern)
    hits: list[str] = []
    for path in _files(settings, check):
        start = offsets.get(str(path), 0)
        if path.stat().st_size < start:  # rotated or truncated since: all of it is new
            start = 0
        with path.open("rb") as stream:
            stream.seek(start)
            hits += [f"{path.name}: {line.strip()}" for line in
                     stream.read().decode("utf-8", "replace").splitlines()
                     if pattern.search(line)]
    if hits:
        return False, f"{len(hits)} new line(s) match {check.error_pattern!r}, first: {hits[0]}"
    return True, f"no new line matches {check.error_pattern!r}"


def _files(settings: Settings, check: LogCheck) -> list[Path]:
    pattern = Path(check.path)
    root = pattern.anchor if pattern.is_absolute() else settings.config_dir
    relative = str(pattern.relative_to(pattern.anchor)) if pattern.is_absolute() else check.path
    return sorted(p for p in Path(root).glob(relative) if p.is_file())
