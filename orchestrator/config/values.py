"""The config's value types: durations, variable names, URLs, secret headers, commands, and
the strict ``Section`` every table of window.toml is read into."""

from __future__ import annotations

import math
import re
import reprlib
import urllib.parse
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

from orchestrator.redact import redact, register, register_url

# The runbook's timeline, in seconds: staging 15 min, backup 10, migrate 5, checks 5, restore 10.
DEFAULT_TIMEOUTS: dict[str, float] = {
    "preflight": 120,
    "staging_dry_run": 900,
    "backup": 600,
    "banner_on": 120,
    "migrate": 300,
    "post_check": 300,
    "banner_off": 120,
    "rollback": 600,
    "rollback_banner_off": 120,
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A week: longer is a typo, and past ~24 days PostgreSQL refuses it as a statement_timeout.
MAX_DURATION_SECONDS = 7 * 24 * 3600.0
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlevel = 2


def shown(value: object) -> str:
    """``repr`` cut short: a value quoted in an error stays one readable line, however long
    or deeply nested it is."""
    return _SHORT.repr(value)


def parse_duration(value: object) -> float:
    """Seconds from 90, 90.5, "90s", "10m" or "1h"; positive, at most a week, or a
    ValueError."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        else:
            seconds = math.nan
    except OverflowError:  # an integer past float's range
        seconds = math.inf
    if math.isnan(seconds):
        raise ValueError(f"must be a duration such as 90, \"90s\", \"10m\" or \"1h\","
                         f" not {shown(value)}")
    if seconds <= 0:
        raise ValueError(f"must be positive, not {shown(value)}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"must be at most a week (168h), not {shown(value)}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _secret_headers(value: dict[str, str]) -> dict[str, str]:
    for header in value.values():  # Authorization: Bearer ... must never be printed
        register(header.split(" ", 1)[-1])
    return value


SecretHeaders = Annotated[dict[str, str], AfterValidator(_secret_headers)]


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):  # what a shell can export
        raise ValueError("must name an environment variable, such as DATABASE_URL, not"
                         f" {shown(value)}")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]

Command = str | list[str]


def checked_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, not {shown(redact(value))}")
    register_url(value)  # a token in the URL must never be printed
    return value


class Section(BaseModel):
    # No number in a config is infinite or NaN: each is a count, a share or a time.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
