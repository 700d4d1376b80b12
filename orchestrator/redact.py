"""Strip secrets at the source, before any text reaches output, logs, journal or reports.

Two mechanisms: every password the window knows about (from the URLs it was given) is
registered and replaced wherever it appears, in any encoding; and anything shaped like
``scheme://user:password@`` has its password replaced even when the window never saw it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\b\w*password\s*[=:]\s*)(?P<pw>'[^']*'|[^\s'\"]+)")
_known: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret so that every later ``redact`` hides it: raw, %-encoded, or inside
    a JSON string (a tool's JSON error escapes "ä" as \\u00e4 and keeps the rest verbatim)."""
    if not secret or len(secret) < 3:
        return
    _known.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                   json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]})


# The password of a database URL that does not parse (a raw "/", "@" or "[" in it): up to
# the first and up to the last "@". libpq reads "user:pa/ss@host" as host "user", port "pa"
# and database "ss@host", and the window would print that.
_LOOSE_PASSWORDS = (re.compile(r"^postgres(?:ql)?://[^:/?#@]*:(?P<pw>[^@]+)@"),
                    re.compile(r"^postgres(?:ql)?://[^:/?#@]*:(?P<pw>.+)@"))


def register_url(url: str | None) -> None:
    if not url:
        return
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:  # "Invalid IPv6 URL": the loose forms below still find it
        password = None
    for secret in {*loose_passwords(url), *([password] if password else [])}:
        register(urllib.parse.unquote(secret))
        register(secret)


def loose_passwords(url: str) -> list[str]:
    """What stands where a database URL's password would, whether the URL parses or not."""
    return [m.group("pw") for pattern in _LOOSE_PASSWORDS if (m := pattern.match(url))]


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
