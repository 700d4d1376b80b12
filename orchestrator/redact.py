"""Strip secrets at the source, before any text reaches output, logs, journal or reports.

Two mechanisms: every password the window knows about (from the URLs it was given) is
registered and replaced wherever it appears, in any encoding; and anything shaped like
``scheme://user:password@`` has its password replaced even when the window never saw it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\b\w*password\s*[=:]\s*)(?P<pw>'[^']*'|[^\s'\"]+)")
_known: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret so that every later ``redact`` hides it, raw or %-encoded."""
    if not secret or len(secret) < 3:
        return
    _known.update(
        {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    )


def register_url(url: str | None) -> None:
    if not url:
        return
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        register(urllib.parse.unquote(parts.password))
        register(parts.password)


def redact(text: str) -> str:
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def redact_value(value: Any) -> Any:
    """``redact`` applied to every string inside lists and mappings (before any encoding,
    so an escaped character cannot hide a password from it)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
