"""The maintenance banner: the user's commands to put it up and take it down.

Putting it up either works or is undone at once (a half-raised banner is taken down before
the window aborts). Taking it down retries within the phase's deadline: after a good
migration, or a good rollback, a stuck banner is the only thing left between users and a
working site.

Three kinds do the switching: the user's commands; a maintenance page written atomically
(temp file, then rename) where the web server looks for it, removed to take the banner down;
and a bounded HTTP request whose answer must say yes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import psycopg

from orchestrator.engine import banners, eta, proc, rehearsals
from orchestrator.engine.context import Context
from orchestrator.engine.facts import REHEARSAL, WRITES_AT_BANNER
from orchestrator.engine.phase import PhaseResult
from orchestrator.engine.rows import PhaseStatus
from orchestrator.errors import ConfigError, PhaseFailed
from orchestrator.postgres import figures
from orchestrator.redact import redact
from orchestrator.toolkit import baseline

OFF_ATTEMPTS = 3


def _switch(ctx: Context, which: Literal["on", "off"]) -> None:
    kind = ctx.settings.banner.kind
    if kind == "file":
        _switch_page(ctx, which)
    elif kind == "http":
        _call(ctx, which)
    else:
        _run(ctx, which)


def _run(ctx: Context, which: Literal["on", "off"]) -> None:
    command = ctx.settings.banner.on if which == "on" else ctx.settings.banner.off
    result = ctx.run_command(command or "", db=ctx.target)
    if result.exit_code != 0:
        raise PhaseFailed(f"banner {which} command exited {result.exit_code}:"
                          f" {proc.tail(result.output)}")


def _switch_page(ctx: Context, which: Literal["on", "off"]) -> None:
    page = ctx.settings.path(ctx.settings.banner.path or "")
    try:
        if which == "off":
            page.unlink(missing_ok=True)  # already gone: the banner is down
            return
        try:
            text = banners.render_page(ctx.settings, expected_end(ctx))
        except ConfigError as exc:
            raise PhaseFailed(exc.message) from exc
        _write_atomically(page, text)
    except OSError as exc:
        raise PhaseFailed(f"banner {which}: the page {page} cannot be"
                          f" {'written' if which == 'on' else 'removed'} ({exc})") from exc
    ctx.log.info("maintenance_page_written", path=str(page))


def _write_atomically(page: Path, text: str) -> None:
    """The web server sees no page or the whole page, never half of one."""
    fd, temporary = tempfile.mkstemp(prefix=f".{page.name}.", dir=page.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        Path(temporary).chmod(0o644)  # the web server's user reads it
        Path(temporary).replace(page)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def expected_end(ctx: Context) -> float:
    """The window's start plus its expected length: phases done count as they took."""
    run = ctx.journal.run(ctx.run_id)
    done = {p.name: p.finished_at - p.started_at for p in ctx.journal.phases(ctx.run_id)
            if p.status == PhaseStatus.SUCCEEDED and p.started_at and p.finished_at}
    rehearsal = ctx.journal.get(ctx.run_id, REHEARSAL)
    return run.created_at + eta.estimate(ctx.settings, rehearsal, done).expected_s


def _call(ctx: Context, which: Literal["on", "off"]) -> None:
    banner = ctx.settings.banner
    body = banner.on_body if which == "on" else banner.off_body
    data = None if body is None else json.dumps(body).encode()
    headers = {**({"Content-Type": "application/json"} if data is not None else {}),
               **banner.headers}
    url = banner.endpoint(which)
    request = urllib.request.Request(url, data=data, method=banner.method,  # noqa: S310 - the user's
                                     headers=headers)
    timeout = max(0.1, min(banner.timeout, ctx.remaining()))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException,
            ValueError) as exc:
        raise PhaseFailed(f"banner {which}: {redact(url)} did not answer:"
                          f" {getattr(exc, 'reason', exc)}") from exc
    wanted = banner.expect_status
    if status != wanted if wanted is not None else not 200 <= status < 300:
        raise PhaseFailed(f"banner {which}: {banner.method} {redact(url)} answered HTTP {status}"
                          f" (expected {wanted or '2xx'})")


class BannerOn:
    """Raises the banner. If it fails half-way, the runner takes it down again before the
    window aborts (as for every abort once the banner may be up). The performance baseline is
    measured first, while production still serves its usual traffic."""

    name = "banner_on"

    def run(self, ctx: Context) -> PhaseResult:
        rehearsals.check_unchanged(ctx.settings, ctx.journal, ctx.run_id,
                                   "the banner was not raised")
        baseline.record_before(ctx, ctx.target)
        _switch(ctx, "on")
        ctx.log.info("banner_raised")
        if ctx.journal.run(ctx.run_id).backup_when == "before_banner":
            self._count_writes(ctx)
        return PhaseResult("banner on")

    @staticmethod
    def _count_writes(ctx: Context) -> None:
        """The write counters once users are held off: with the backup's, they tell what a
        rollback would discard."""
        try:
            with ctx.connect(ctx.target) as conn:
                if wait := figures.stats_settle_wait(conn, ctx.settings.backup.write_stats_settle):
                    ctx.log.info("write_stats_settling", wait_s=round(wait, 3))
                    time.sleep(wait)
                ctx.journal.put(ctx.run_id, WRITES_AT_BANNER, figures.write_counters(conn))
        except (PhaseFailed, psycopg.Error) as exc:  # a report, not a reason to stop
            ctx.log.warning("write_counters_unavailable", error=str(exc))


class BannerOff:
    name = "banner_off"

    def run(self, ctx: Context) -> PhaseResult:
        attempt = 1
        while True:
            try:
                _switch(ctx, "off")
                break
            except PhaseFailed as exc:
                ctx.log.warning("banner_off_failed", attempt=attempt, error=exc.message)
                if attempt == OFF_ATTEMPTS or ctx.remaining() < attempt:
                    raise
                time.sleep(attempt)
                attempt += 1
        ctx.log.info("banner_lowered")
        return PhaseResult("banner off")


class RollbackBannerOff(BannerOff):
    name = "rollback_banner_off"
