"""[banner]'s three kinds: what each needs, what each refuses, and the page the file kind
writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.engine import banners
from orchestrator.errors import ConfigError
from orchestrator.redact import redact
from tests.support.settings import make_settings

WINDOW: dict[str, Any] = {"name": "shop-prod", "confirm_phrase": "SHOP-OK"}


def load(banner: dict[str, Any], folder: Path = Path("/srv/app")) -> config.Settings:
    return make_settings(folder, window=WINDOW, banner=banner)


def test_todays_form_is_a_command_banner() -> None:
    settings = load({"on": "php artisan down", "off": "php artisan up"})

    assert settings.banner.kind == "command"
    assert banners.describe(settings, "off") == "php artisan up"
    assert banners.target(settings) == "command"


@pytest.mark.parametrize(("banner", "message"), [
    ({"on": "up"}, 'banner: kind = "command" needs off'),
    ({}, 'banner: kind = "command" needs on'),
    ({"kind": "file"}, 'banner: kind = "file" needs path'),
    ({"kind": "http"}, 'banner: kind = "http" needs url, or both on_url and off_url'),
    ({"kind": "http", "url": "https://cdn.example.com/flag"},
     'banner: kind = "http" with one url needs on_body and off_body'),
    ({"kind": "http", "on_url": "ftp://x/on", "off_url": "https://x/off"},
     "banner.on_url: must be an http:// or https:// URL"),
    ({"kind": "file", "path": "m.html", "on": "up"}, "banner: on is not used by kind = 'file'"),
    ({"kind": "page", "path": "m.html"}, "banner.kind: Input should be 'command'"),
])
def test_each_kind_names_the_key_it_misses(banner: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^/srv/app/window.toml: " + _literal(message)):
        load(banner)


def _literal(text: str) -> str:
    return "".join("\\" + c if c in "().[]*+?{}|^$\\" else c for c in text)


def test_http_headers_are_redacted_and_bodies_are_json() -> None:
    settings = load({"kind": "http", "url": "https://cdn.example.com/flag",
                     "headers": {"Authorization": "Bearer tok-123-secret"},
                     "on_body": {"maintenance": True}, "off_body": {"maintenance": False}})

    shown = banners.describe(settings, "on")

    assert "tok-123-secret" not in shown
    assert "https://cdn.example.com/flag" in shown
    assert '{"maintenance": true}' in shown
    assert "tok-123-secret" not in redact("Bearer tok-123-secret")
    assert settings.banner.endpoint("off") == "https://cdn.example.com/flag"


def test_the_default_page_escapes_the_message_and_shows_the_end(tmp_path: Path) -> None:
    settings = load({"kind": "file", "path": "maintenance.html",
                     "message": "<script>alert(1)</script> & back soon"}, tmp_path)
    ends = time.mktime((2026, 3, 1, 23, 45, 0, 0, 0, -1))

    page = banners.render_page(settings, ends)

    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; back soon" in page
    assert "<script>" not in page
    assert "23:45" in page and "2026-03-01" in page
    assert "$" not in page  # every placeholder filled
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_a_template_of_ones_own(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<p>$message until $ends_at ($window) $other</p>")
    settings = load({"kind": "file", "path": "out/m.html", "template": "page.html",
                     "message": "Tea & biscuits"}, tmp_path)

    page = banners.render_page(settings, time.time())

    assert page.startswith("<p>Tea &amp; biscuits until ")
    assert "(shop-prod) $other</p>" in page
    assert banners.target(settings) == f"file {tmp_path}/out/m.html (from {tmp_path}/page.html)"


def test_a_missing_template_is_a_config_error(tmp_path: Path) -> None:
    settings = load({"kind": "file", "path": "m.html", "template": "nope.html"}, tmp_path)

    with pytest.raises(ConfigError, match=r"\[banner\] template .*nope.html cannot be read"):
        banners.template(settings)
