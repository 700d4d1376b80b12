"""Checks that tell the truth: HTTP bodies, retries, logs, and the built-in database checks."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.shop import Shop

ON_PRODUCTION = ('psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL" && '
                 'if [ "$WINDOW_PHASE" = migrate ]; then {}; fi')

# On production: a unique index over duplicates fails half-way and stays behind, invalid.
LEAVES_INVALID_INDEX = ON_PRODUCTION.format(
    'psql -X -q -c "CREATE UNIQUE INDEX CONCURRENTLY orders_customer ON orders (customer)"'
    ' "$DATABASE_URL" || true')


class _App(http.server.BaseHTTPRequestHandler):
    """/down answers 200 with the database down; /waking answers 503 three times first;
    /unavailable always 503; /hang takes 10 s; anything else is healthy."""

    calls: dict[str, int] = {}  # noqa: RUF012 - per-server state, reset by the fixture

    def do_GET(self) -> None:
        self.calls[self.path] = self.calls.get(self.path, 0) + 1
        status, body = 200, {"status": "ok", "checks": {"db": "ok"}}
        if self.path == "/down":
            body = {"status": "ok", "checks": {"db": "error"}}
        elif self.path == "/unavailable" or (self.path == "/waking"
                                              and self.calls[self.path] <= 3):
            status = 503
        elif self.path == "/hang":
            time.sleep(10)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def app() -> Iterator[str]:
    _App.calls = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def health(url: str, timeout: str = "20s", staging_url: str | None = "same") -> str:
    """An http check of ``url`` (production's app); the rehearsal asks ``staging_url``, by
    default the same app (the test's one app stands for both), or skips it (None)."""
    staging = "" if staging_url is None else \
        f'\nstaging_url = "{url if staging_url == "same" else staging_url}"'
    return (f'\n[[checks]]\nname = "health"\nkind = "http"\nurl = "{url}"{staging}'
            f'\ntimeout = "{timeout}"\nexpect_json = {{ "checks.db" = "ok" }}'
            '\nexpect_body = \'"status": "ok"\'\n')


def test_a_healthy_endpoint_passes(shop: Shop, app: str) -> None:
    shop.configure(checks=health(f"{app}/ok"))
    done = shop.run_window()
    assert done.returncode == 0, done.stderr
    assert "check_passed" in done.stderr


@pytest.mark.parametrize(("path", "reason"), [("/unavailable", "HTTP 503"),
                                              ("/hang", "did not answer")])
def test_a_failing_endpoint_stops_the_window_before_production(
        shop: Shop, app: str, path: str, reason: str) -> None:
    shop.configure(checks=health(f"{app}{path}", timeout="1s"))
    started = time.monotonic()

    done = shop.run_window()

    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert reason in shop.phase("staging_dry_run")["error"]
    assert shop.banner_log() == []


def test_a_200_saying_the_database_is_down_fails(shop: Shop, app: str) -> None:
    shop.configure(checks=health(f"{app}/down", timeout="2s"))
    done = shop.run_window()
    assert done.returncode == 3, done.stderr
    assert "checks.db = 'error' (expected 'ok')" in shop.phase("staging_dry_run")["error"]


def test_an_endpoint_waking_up_passes_after_retries(shop: Shop, app: str) -> None:
    shop.configure(checks=health(f"{app}/waking"))
    done = shop.run_window()
    assert done.returncode == 0, done.stderr
    assert "after 4 attempts" in done.stderr


def test_only_log_lines_written_during_the_window_fail(shop: Shop) -> None:
    (shop.folder / "logs").mkdir(parents=True)
    (shop.folder / "logs" / "app.log").write_text("ERROR from last week\nINFO fine\n")
    shop.configure(
        migrate=ON_PRODUCTION.format("echo 'ERROR relation orders does not exist'"
                                     " >> logs/app.log"),
        checks='\n[[checks]]\nname = "app-log"\nkind = "log"\npath = "logs/*.log"\n'
               'error_pattern = "^ERROR"\n')

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    assert shop.phase("staging_dry_run")["status"] == "succeeded", "old lines do not count"
    error = shop.phase("post_check")["error"]
    assert "app-log" in error and "relation orders does not exist" in error
    assert "last week" not in error


def test_an_invalid_index_left_by_the_migration_fails_the_builtin_check(shop: Shop) -> None:
    shop.configure(migrate=LEAVES_INVALID_INDEX)

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    assert "no-invalid-indexes: found: orders_customer" in shop.phase("post_check")["error"]
    assert "no-invalid-indexes" in shop.window("plan").stdout


def test_a_migrate_session_still_alive_fails_the_builtin_check(shop: Shop) -> None:
    shop.configure(migrate=ON_PRODUCTION.format(
        '(psql -X -q -c "SELECT pg_sleep(20)" "$DATABASE_URL" > /dev/null 2>&1 &)'
        " && sleep 1"))

    done = shop.run_window()

    assert done.returncode == 1, done.stderr
    assert "no-migrate-sessions: found:" in shop.phase("post_check")["error"]


def test_builtin_checks_can_be_skipped_by_name(shop: Shop) -> None:
    shop.configure(migrate=LEAVES_INVALID_INDEX)
    shop.config.write_text(shop.config.read_text().replace(
        'confirm_phrase = "DEMO-PROD-OK"',
        'confirm_phrase = "DEMO-PROD-OK"\nskip_checks = ["no-invalid-indexes"]'))

    assert shop.run_window().returncode == 0
    assert "no-invalid-indexes" not in shop.window("plan").stdout


def test_the_rehearsal_asks_staging_and_post_check_asks_production(shop: Shop, app: str
                                                                   ) -> None:
    """Staging's app is healthy, production's says its database is down: the rehearsal
    passes on staging's answer, post_check fails on production's and keeps its body."""
    shop.configure(checks=health(f"{app}/down", timeout="2s", staging_url=f"{app}/ok"))

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert shop.phase("staging_dry_run")["status"] == "succeeded"
    assert _App.calls.get("/ok", 0) >= 1
    error = shop.phase("post_check")["error"]
    assert "checks.db = 'error' (expected 'ok')" in error
    assert 'body: {"status": "ok", "checks": {"db": "error"}}' in error, "what it saw is kept"
    report = next((shop.folder / ".window" / "reports").glob("*.md")).read_text()
    assert '"db": "error"' in report


def test_without_staging_url_the_rehearsal_skips_the_http_check(shop: Shop, app: str) -> None:
    shop.configure(checks=health(f"{app}/down", timeout="2s", staging_url=None))

    plan = shop.window("plan")
    done = shop.run_window()

    assert "the rehearsal SKIPS it (no staging_url)" in plan.stdout
    assert done.returncode == 1, done.stdout + done.stderr
    assert "check_skipped" in done.stderr
    assert shop.phase("staging_dry_run")["status"] == "succeeded"
    assert "checks.db = 'error'" in shop.phase("post_check")["error"]


def test_command_checks_run_in_their_workdir_with_the_environment_they_check(shop: Shop
                                                                           ) -> None:
    (shop.folder / "frontend").mkdir()
    shop.configure(checks='\n[[checks]]\nname = "where"\nkind = "command"\n'
                          'workdir = "frontend"\ncommand = \'echo "$WINDOW_PHASE $(pwd)'
                          ' $DATABASE_URL" >> ../seen.log\'\n')

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    seen = (shop.folder / "seen.log").read_text().splitlines()
    assert [line.split()[0] for line in seen] == ["staging_dry_run", "post_check"]
    assert all(line.split()[1].endswith("/frontend") for line in seen)
    assert seen[0].endswith(f"/{shop.staging_db}") and seen[1].endswith(f"/{shop.prod_db}")


def test_a_failing_command_check_keeps_what_it_said(shop: Shop) -> None:
    shop.configure(checks='\n[[checks]]\nname = "drift"\nkind = "command"\n'
                          'command = "echo checking; echo schema drift in orders >&2; exit 1"\n')

    done = shop.run_window()

    assert done.returncode == 3, done.stdout + done.stderr
    error = shop.phase("staging_dry_run")["error"]
    assert "drift: exited 1: checking | schema drift in orders" in error


def test_expected_output_is_found_however_long_the_output(shop: Shop) -> None:
    # A flows check that prints its verdict first, then a 1 MB log: far past the tail of
    # a command's output the window keeps to show.
    shop.configure(checks='\n[[checks]]\nname = "flows"\nkind = "command"\n'
                          'command = "echo ALL-FLOWS-OK; seq 1 150000"\n'
                          'expect_output = "ALL-FLOWS-OK"\n')

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
