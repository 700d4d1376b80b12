"""Strip secrets at the source, before any text reaches output, logs, journal or reports.

Two mechanisms: every password the window knows about (from the URLs it was given) is
registered and replaced wherever it appears, in any encoding; and anything shaped like
``scheme://user:password@`` has its password replaced even when the window never saw it.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)")
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

