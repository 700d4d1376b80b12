"""``[[checks]]``: what a window checks on staging and on production, one model per kind, and
the built-in checks every window runs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
)

from orchestrator.config.values import Command, Duration, SecretHeaders, Section, checked_url


class CheckBase(Section):
    name: str
    timeout: Duration = 30.0


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc})") from exc
    return value


Regex = Annotated[str, AfterValidator(_regex)]



class HttpCheck(CheckBase):
    """Retried with backoff until its timeout: an application needs seconds after a
    migration. Passes on ``expect_status`` AND, when given, a JSON body holding
    ``expect_json`` (dotted paths: ``"checks.db" = "ok"``) AND a body matching
    ``expect_body``: a 200 saying the database is down is a failure. ``url`` is production's
    application (post_check); the rehearsal asks ``staging_url``, or skips the check: it never
    asks production's application and calls the answer staging's."""

    kind: Literal["http"]
    url: str
    staging_url: str | None = None
    staging_headers: SecretHeaders = {}
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: int = 200
    expect_json: dict[str, Any] | None = None
    expect_body: Regex | None = None
    headers: SecretHeaders = {}

    @field_validator("url", "staging_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else checked_url(value)


class SqlCheck(CheckBase):
    kind: Literal["sql"]
    query: str


class CommandCheck(CheckBase):
    """Runs where the migration runs (``workdir``, else ``[migrate] workdir``), with
    ``DATABASE_URL`` and ``WINDOW_PHASE`` of the environment it checks."""

    kind: Literal["command"]
    command: Command
    expect_output: str | None = None
    workdir: str | None = None


class LogCheck(CheckBase):
    """Passes when no line matching ``error_pattern`` was appended, since the window
    started, to any file matching ``path`` (a glob, relative to the config's folder)."""

    kind: Literal["log"]
    path: str
    error_pattern: Regex


Check = Annotated[HttpCheck | SqlCheck | CommandCheck | LogCheck, Field(discriminator="kind")]
CHECK_KINDS = ("http", "sql", "command", "log")
# Checks every window runs after its own, unless [window] skip_checks names them.
BUILTIN_CHECKS = ("no-invalid-indexes", "no-migrate-sessions", "migration-tool-state")
