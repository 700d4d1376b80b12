"""The banner as a maintenance page on disk and as an HTTP endpoint: up during the window,
down after it (completed, rolled back, or aborted because the banner itself failed), and
the page as a real headless chromium renders it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands import demo
from tests.support.browser import pixels_of, screenshot
from tests.support.shop import Shop, add_free_sample

MESSAGE = "Back soon: the shop <b>gets</b> faster & safer"
# The page as the migration saw it on production (not during the staging rehearsal).
KEEPS_THE_PAGE = ('if [ "$WINDOW_PHASE" = migrate ]; then cp www/maintenance.html seen.html;'
                  ' fi; psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"')
TOKEN = "s3cr3t-banner-token"


def use_banner(shop: Shop, section: str, migration_sql: str = demo.GOOD_MIGRATION,
               **overrides: Any) -> None:
    config = shop.configure(migration_sql, **overrides)
    text = re.sub(r"\[banner\]\n.*?\n\n", section.strip() + "\n\n", config.read_text(),
                  count=1, flags=re.DOTALL)
    config.write_text(text)


def use_page(shop: Shop, migration_sql: str = demo.GOOD_MIGRATION) -> Path:
    (shop.folder / "www").mkdir(exist_ok=True)
    use_banner(shop, f'[banner]\nkind = "file"\npath = "www/maintenance.html"\n'
                     f"message = {json.dumps(MESSAGE)}\n", migration_sql,
               migrate=KEEPS_THE_PAGE)
    return shop.folder / "www" / "maintenance.html"


def test_file_banner_is_up_during_the_window_and_gone_after(shop: Shop, tmp_path: Path) -> None:
    page = use_page(shop)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert not page.exists()
    seen = (shop.folder / "seen.html").read_text()
    assert "Back soon: the shop &lt;b&gt;gets&lt;/b&gt; faster &amp; safer" in seen
    assert "Expected back by" in seen
    assert not list(page.parent.glob(".maintenance.html.*")), "no temp file left behind"
    plan = shop.window("plan")
    assert f"banner      file {page}" in plan.stdout
    png = tmp_path / "page.png"
    screenshot(shop.folder / "seen.html", png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert pixels_of(png, "#fef3c7") > 20_000, "the page's own style: the end-time box"


def test_file_banner_comes_down_after_a_rollback(shop: Shop) -> None:
    page = use_page(shop, demo.BAD_MIGRATION)
    with_free_sample(shop)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert (shop.folder / "seen.html").exists(), "the page was up while production migrated"
    assert not page.exists()
    assert shop.phase("rollback_banner_off")["status"] == "succeeded"


def with_free_sample(shop: Shop) -> None:
    """A row staging never saw: the bad migration passes its rehearsal, trips on production."""
    add_free_sample(shop.prod_url)


@dataclass
class Endpoint:
    server: ThreadingHTTPServer
    calls: list[dict[str, Any]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    made: Endpoint

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            made.calls.append({"path": self.path, "method": self.command,
                               "authorization": self.headers.get("Authorization"),
                               "json": json.loads(body) if body else None})
            self.send_response(500 if self.path in made.failing else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    made = Endpoint(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    thread = threading.Thread(target=made.server.serve_forever, daemon=True)
    thread.start()
    yield made
    made.server.shutdown()
    made.server.server_close()
    thread.join(timeout=10)


def use_endpoint(shop: Shop, endpoint: Endpoint) -> None:
    use_banner(shop, f"""
[banner]
kind = "http"
on_url = "{endpoint.url('/on')}"
off_url = "{endpoint.url('/off')}"
headers = {{ Authorization = "Bearer {TOKEN}" }}
on_body = {{ maintenance = true, note = "window" }}
off_body = {{ maintenance = false }}
""")


def test_http_banner_calls_on_then_off(shop: Shop, endpoint: Endpoint) -> None:
    use_endpoint(shop, endpoint)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert endpoint.calls == [
        {"path": "/on", "method": "POST", "authorization": f"Bearer {TOKEN}",
         "json": {"maintenance": True, "note": "window"}},
        {"path": "/off", "method": "POST", "authorization": f"Bearer {TOKEN}",
         "json": {"maintenance": False}},
    ]
    plan = shop.window("plan")
    assert f"http POST {endpoint.url('/on')} on" in plan.stdout
    assert TOKEN not in plan.stdout + done.stdout + done.stderr


def test_http_banner_refused_aborts_and_is_still_taken_down(shop: Shop,
                                                            endpoint: Endpoint) -> None:
    use_endpoint(shop, endpoint)
    endpoint.failing.add("/on")

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    assert [call["path"] for call in endpoint.calls] == ["/on", "/off"]
    assert "HTTP 500" in shop.phase("banner_on")["error"]
    assert shop.status()["state"] == "aborted"
    assert not shop.has_column("orders", "status"), "production untouched"


def test_a_page_folder_that_is_not_there_stops_plan_and_run_before_anything(
        shop: Shop) -> None:
    """A file banner whose folder does not exist (`window init`'s default `public/` in a
    project without one) is refused by plan and by run before the phrase (exit 3): no
    backup, no rehearsal, and no folder made for a page no web server would serve."""
    use_banner(shop, '[banner]\nkind = "file"\npath = "public/maintenance.html"\n')

    plan, run = shop.window("plan"), shop.run_window()

    assert plan.returncode == run.returncode == 3, plan.stderr + run.stdout + run.stderr
    said = f"its folder {shop.folder / 'public'} does not exist"
    assert said in plan.stderr and said in run.stderr
    assert not (shop.folder / "public").exists()
    assert shop.window("status").returncode == 2, "refused before any window was started"
    assert not (shop.folder / "backups").exists() and shop.banner_log() == []
    # A rehearsal puts up no banner: it is not refused for the banner's folder.
    rehearsed = shop.window("rehearse")
    assert rehearsed.returncode == 0, rehearsed.stdout + rehearsed.stderr
