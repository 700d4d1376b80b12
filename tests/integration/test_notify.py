"""Notifications reach real receivers on loopback: apprise's json:// POSTs to a local HTTP
server and its mailto:// talks to a local SMTP server (aiosmtpd); contacts gate the window."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from orchestrator.commands import demo
from tests.support.prisma import MIGRATION, prisma_project
from tests.support.shop import Shop, add_free_sample

NOTIFY = """
        [notify]
        urls_env = "WINDOW_NOTIFY_URLS"
"""
CONTACT_NAMES = ("Maria Papadopoulou", "Nikos Georgiou", "dba-oncall@example.com",
                 "Eleni Ioannou")


@dataclass
class Inbox:
    """What the local HTTP receiver and SMTP server were sent."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    mails: list[email.message.EmailMessage] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [post["title"] for post in self.posts]

    def text(self, title_part: str) -> str:
        return next(post["message"] for post in self.posts if title_part in post["title"])

    def mail(self, subject_part: str) -> str:
        found = next(m for m in self.mails if subject_part in str(m["Subject"]))
        return str(found.get_body(("plain",)).get_content())  # type: ignore[union-attr]

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append(message)  # type: ignore[arg-type]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def inbox(shop: Shop) -> Iterator[Inbox]:
    received = Inbox()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.posts.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    smtp = Controller(received, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    shop.env["WINDOW_NOTIFY_URLS"] = (
        f"json://127.0.0.1:{web.server_port}/hooks/window"
        f" mailto://127.0.0.1:{smtp.port}?from=window@example.com&to=oncall@example.com")
    try:
        yield received
    finally:
        smtp.stop()
        web.shutdown()
        web.server_close()


def _notifying(shop: Shop, migration: str = demo.GOOD_MIGRATION, **overrides: Any) -> None:
    shop.configure(migration, contacts=demo.DEMO_CONTACTS + NOTIFY, **overrides)


def test_a_completed_window_tells_each_step_by_webhook_and_email(shop: Shop,
                                                                 inbox: Inbox) -> None:
    # The production migration runs seconds longer than its rehearsal: an overrun.
    _notifying(shop, migrate='if [ "$WINDOW_PHASE" = migrate ]; then sleep 3; fi;'
                             ' psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"')
    done = shop.run_window()
    assert done.returncode == 0, done.stderr
    titles = inbox.titles()
    for expected in ("the window started", "the maintenance banner is up",
                     "the migration is applied", "migrate is running past", "completed"):
        assert any(expected in title for title in titles), (expected, titles)
    assert titles[-1] == "[shop-prod] completed"
    assert "notified" in done.stderr
    assert "migration is live" in inbox.mail("completed")


def test_a_rolled_back_window_names_the_contacts(shop: Shop, inbox: Inbox) -> None:
    _notifying(shop, demo.BAD_MIGRATION)
    add_free_sample(shop.prod_url)
    done = shop.run_window()
    assert done.returncode == 1, done.stderr
    posted, mailed = inbox.text("rolled back"), inbox.mail("rolled back")
    for text in (posted, mailed):
        assert "production holds its backup again" in text
        for name in CONTACT_NAMES:
            assert name in text
        assert "window status" in text
    assert "completed" not in " ".join(inbox.titles())
    report = next((shop.folder / ".window" / "reports").glob("*.md")).read_text()
    assert all(name in report for name in CONTACT_NAMES)


def test_a_failing_notifier_never_fails_the_window(shop: Shop) -> None:
    _notifying(shop)
    shop.env["WINDOW_NOTIFY_URLS"] = f"json://user:s3cr3t-token@127.0.0.1:{_free_port()}/x"
    done = shop.run_window()
    assert done.returncode == 0, done.stderr
    assert "notify_failed" in done.stderr
    assert "s3cr3t-token" not in done.stderr + done.stdout
    assert shop.has_column("orders", "status")


@pytest.mark.parametrize("value", ["[FILL IN]", "", "TBD", "<name and phone>"])
def test_plan_and_run_refuse_unfilled_contacts(shop: Shop, value: str) -> None:
    shop.configure(contacts=demo.DEMO_CONTACTS.replace(
        '"Nikos Georgiou +30 691 000 0002"', json.dumps(value)))
    for done in (shop.window("plan"), shop.run_window()):
        assert done.returncode == 2, done.stderr
        assert "[contacts] backup is" in done.stderr
        assert "Traceback" not in done.stderr
    assert not shop.has_column("orders", "status")
    assert shop.banner_log() == []


def test_announce_sends_the_notice_in_local_time(shop: Shop, inbox: Inbox) -> None:
    _notifying(shop)
    done = shop.window("announce", "--at", "2026-12-01 02:00", "--tz", "Europe/Athens")
    assert done.returncode == 0, done.stderr
    notice = inbox.text("planned maintenance")
    assert "shop-prod on 2026-12-01 02:00 EET (Europe/Athens)" in notice
    assert "expected to take about" in notice
    assert notice in inbox.mail("planned maintenance").replace("\r\n", "\n")
    assert "sent: [shop-prod] planned maintenance on 2026-12-01 02:00 EET" in done.stdout
    bad = shop.window("announce", "--at", "2026-12-01 02:00", "--tz", "Mars/Olympus")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "window: --tz 'Mars/Olympus' is not a time zone such as" \
                                 " Europe/Athens."


def test_the_completion_notice_names_the_migrations_applied(shop: Shop, inbox: Inbox) -> None:
    prisma_project(shop, contacts=demo.DEMO_CONTACTS + NOTIFY)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"migrations applied: {MIGRATION}" in inbox.text("completed")


ORDERS_CHECK = """
[[checks]]
name = "orders"
kind = "command"
command = '[ "$WINDOW_PHASE" != post_check ] || { echo "orders: 0 rows"; exit 1; }'
"""


def test_a_failed_check_says_what_it_saw_in_the_notice(shop: Shop, inbox: Inbox) -> None:
    _notifying(shop, checks=ORDERS_CHECK)

    done = shop.run_window()

    assert done.returncode == 1, done.stdout + done.stderr
    assert "why: " in inbox.text("rolled back")
    assert "orders: exited 1: orders: 0 rows" in inbox.text("rolled back")
