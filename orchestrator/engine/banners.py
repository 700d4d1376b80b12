"""What a banner is, in words and as a page: shared by the phases that switch it, ``window
plan`` that shows it, and the advice that tells a person how to take it down by hand.

The maintenance page is self-contained (no stylesheet, font or script to fetch: the site
behind it is down) and every value put into it is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
import shlex
import string
from datetime import datetime
from typing import Literal

from orchestrator.config import BannerSection, Settings
from orchestrator.engine import proc
from orchestrator.errors import ConfigError, GateRefused
from orchestrator.redact import redact

DEFAULT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>Down for maintenance</title>
<style>
  body { margin: 0; min-height: 100vh; display: flex; align-items: center;
         justify-content: center; background: #f3f4f6; color: #1f2937;
         font: 18px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  main { max-width: 36rem; margin: 2rem; padding: 2.5rem 3rem; background: #ffffff;
         border-top: 8px solid #d97706; border-radius: 12px;
         box-shadow: 0 10px 30px rgba(0, 0, 0, .12); }
  h1 { margin: 0 0 1rem; font-size: 2rem; color: #92400e; }
  .ends { margin-top: 1.5rem; padding: .75rem 1rem; background: #fef3c7;
          border-radius: 8px; font-weight: 600; }
</style>
</head>
<body>
<main>
<h1>Down for maintenance</h1>
<p id="message">$message</p>
<p class="ends">Expected back by <time datetime="$ends_at_iso">$ends_at</time>.</p>
</main>
</body>
</html>
"""


def template(settings: Settings) -> str:
    """The page's template: the configured file, else the built-in page."""
    if settings.banner.template is None:
        return DEFAULT_PAGE
    path = settings.path(settings.banner.template)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[banner] template {path} cannot be read ({exc}).") from exc


def require_page_folder(settings: Settings) -> None:
    """Refuses, before anything is done, a ``file`` banner whose page could not go up: its
    folder is missing (no web server serves a page from a folder that is not there:
    creating it would put up a banner nobody sees) or this user may not write in it."""
    if settings.banner.kind != "file":
        return
    page = settings.path(settings.banner.path or "")
    folder = page.parent
    if not folder.is_dir():
        raise GateRefused(f"[banner] path {page}: its folder {folder} does not exist, so no web"
                          " server serves the page from it; point path at the folder the web"
                          " server serves (or create that folder where it looks).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GateRefused(f"[banner] path {page}: this user may not write in {folder}.")


def render_page(settings: Settings, ends_at: float) -> str:
    """The maintenance page: the message and the expected end time, escaped."""
    moment = datetime.fromtimestamp(ends_at).astimezone()
    values = {"message": html.escape(settings.banner.message),
              "ends_at": html.escape(moment.strftime("%H:%M %Z (%Y-%m-%d)")),
              "ends_at_iso": moment.isoformat(timespec="seconds"),
              "window": html.escape(settings.window.name)}
    return string.Template(template(settings)).safe_substitute(values)


def describe(settings: Settings, which: Literal["on", "off"]) -> str:
    """One line: what putting the banner up (or taking it down) does, secrets redacted."""
    banner = settings.banner
    if banner.kind == "file":
        page = settings.path(banner.path or "")
        return f"write {page}" if which == "on" else f"rm -f {page}"
    if banner.kind == "http":
        return redact(_curl(banner, which))
    command = banner.on if which == "on" else banner.off
    return redact(proc.describe(command or ""))


def _curl(banner: BannerSection, which: Literal["on", "off"]) -> str:
    """The http banner's request as the curl command a person could run by hand."""
    body = banner.on_body if which == "on" else banner.off_body
    parts = ["curl", "-fsS", "-X", banner.method, banner.endpoint(which)]
    for name, value in banner.headers.items():
        parts += ["-H", f"{name}: {value}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    return shlex.join(parts)


def target(settings: Settings) -> str:
    """For ``window plan``: the banner's kind and what it acts on."""
    banner = settings.banner
    if banner.kind == "file":
        source = settings.path(banner.template) if banner.template else "built-in page"
        return f"file {settings.path(banner.path or '')} (from {source})"
    if banner.kind == "http":
        return (f"http {banner.method} {redact(banner.endpoint('on'))} on,"
                f" {redact(banner.endpoint('off'))} off")
    return "command"
