"""Tell people what the window is doing, through apprise (Slack, email, webhooks, ...).

The URLs come from the variable ``[notify] urls_env`` names: they carry tokens, so they are
registered for redaction and never read from the config file. A notifier that fails never
fails the window: each failure is one ``notify_failed`` event, and the window goes on.
Each send is bounded by apprise's own timeouts (connect and read, a few seconds each).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from string import Template
from typing import Any

import structlog

from orchestrator.config import ContactsSection, Settings
from orchestrator.engine import eta
from orchestrator.engine.machine import State
from orchestrator.redact import redact, register_url

# A phase is "overrunning" this long past what it was expected to take: a few seconds of
# noise on a phase the rehearsal measured in milliseconds is not news.
OVERRUN_GRACE_SECONDS = 2.0

# (source phase, trigger) -> (event, what the window is doing now) for the notices sent
# while it runs; the ending is told by ``Notices.finished``.
PROGRESS = {
    (State.BANNER_ON, "succeeded"): ("banner_up", "the maintenance banner is up"),
    (State.MIGRATE, "succeeded"): ("migration_done",
                                   "the migration is applied; post-checks are running"),
}
ENDINGS = {
    State.COMPLETED: "completed: the migration is live and the banner is down",
    State.ROLLED_BACK: "rolled back: the migration failed and production holds its backup"
                       " again (the failed database is kept)",
    State.ABORTED: "aborted before production changed",
    State.NEEDS_ATTENTION: "NEEDS ATTENTION: a person must act now",
}

NEXT_STEPS = {
    State.ROLLED_BACK: "Next: `window status` shows what failed; fix the migration, rehearse"
                       " it, and plan a new window.",
    State.ABORTED: "Next: `window status` shows why; nothing needs undoing.",
}


def urls(settings: Settings) -> list[str]:
    """The apprise URLs in the notify variable, space or comma separated (none if unset)."""
    name = settings.notify.urls_env
    found = [u for u in re.split(r"[\s,]+", os.environ.get(name, "")) if u] if name else []
    for url in found:
        register_url(url)
    return found


class Notifier:
    """Sends one message to every configured service; never raises."""

    def __init__(self, settings: Settings) -> None:
        self._log = structlog.get_logger()
        self._lock = threading.Lock()  # the overrun timer sends from its own thread
        self._services: list[Any] = []
        found = urls(settings)
        if not found:
            return
        import apprise  # noqa: PLC0415 - only windows that notify pay for loading it

        quiet = logging.getLogger("apprise")  # its own lines would name hosts and paths
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        for url in found:
            service = apprise.Apprise.instantiate(url)
            if service is None:
                self._log.warning("notify_failed", error=f"not an apprise URL: {redact(url)}")
            else:
                # apprise spaces sends to one service out (5.5 s for email): a window sends a
                # handful of messages, minutes apart, and must never stall waiting on that.
                service.request_rate_per_sec = 0
                self._services.append(service)

    @property
    def configured(self) -> bool:
        return bool(self._services)

    def send(self, event: str, title: str, body: str) -> bool:
        """True when every service took the message."""
        with self._lock:
            sent = [self._send_one(service, event, title, body) for service in self._services]
        return all(sent)  # every service is tried, whichever failed before

    def _send_one(self, service: Any, event: str, title: str, body: str) -> bool:
        where = redact(service.url(privacy=True))
        sent, reason = _deliver(service, title, body)
        if sent:
            self._log.info("notified", notice=event, service=where)
        else:
            self._log.warning("notify_failed", notice=event, service=where,
                              error=redact(reason))
        return sent


def _deliver(service: Any, title: str, body: str) -> tuple[bool, str]:
    """Whether the service took the message, and if not, apprise's last word on why."""
    import apprise  # noqa: PLC0415

    capture: Any = apprise.LogCapture(level=logging.WARNING)  # type: ignore[no-untyped-call]
    with capture as captured:
        try:
            if service.notify(body=body, title=title):
                return True, ""
        except Exception as exc:  # a notifier's bug must not end the window
            return False, f"{type(exc).__name__}: {exc}"
    lines = captured.getvalue().strip().splitlines()
    return False, lines[-1].split(" - ", 2)[-1] if lines else "the service refused it"


class Notices:
    """What the engine tells people, and when: it calls these at the moments that matter."""

    def __init__(self, settings: Settings, run_id: str,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.run_id = run_id
        self.notifier = notifier or Notifier(settings)

    def _during(self, event: str, state: str) -> None:
        with _never_raising(event):
            text = render(self.settings.communication.during, self.settings, state=state)
            self.notifier.send(event, self._title(state), f"{text}\n(run {self.run_id})")

    def _title(self, what: str) -> str:
        return f"[{self.settings.window.name}] {what.split(':', maxsplit=1)[0]}"

    def started(self, resumed: bool = False) -> None:
        self._during("window_resumed" if resumed else "window_started",
                     "the window resumed" if resumed else "the window started")

    def transition(self, source: str, trigger: str) -> None:
        if found := PROGRESS.get((State(source), trigger)):
            self._during(*found)

    def finished(self, final: str, next_step: str = "",
                 applied: list[str] | None = None, why: str = "") -> None:
        """The ending, with what production's migration applied (its names) and, for a
        window that did not complete, why (the failed phase's error: what a check saw)."""
        state = ENDINGS.get(State(final), final)
        failed = final != State.COMPLETED
        with _never_raising(f"window_{final}"):
            text = render(self.settings.communication.after, self.settings, state=state,
                          contacts=contacts_text(self.settings.contacts) if failed else "",
                          next=(next_step or NEXT_STEPS.get(State(final), "")).strip())
            ran = f"\nmigrations applied: {', '.join(applied)}" if applied else ""
            cause = f"\nwhy: {redact(why)}" if why and failed else ""
            self.notifier.send(f"window_{final}", self._title(state),
                               f"{text.strip()}{ran}{cause}\n(run {self.run_id})")

    @contextmanager
    def overrun_watch(self, phase: str, expected_s: float | None) -> Iterator[None]:
        """Tell people once if ``phase`` runs past its expected duration."""
        if expected_s is None or not self.notifier.configured:
            yield
            return
        limit = expected_s + OVERRUN_GRACE_SECONDS
        timer = threading.Timer(limit, self._overrun, (phase, expected_s))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _overrun(self, phase: str, expected_s: float) -> None:
        self._during("phase_overrun", f"{phase} is running past its expected"
                                      f" {eta.shown(expected_s)}")


@contextmanager
def _never_raising(event: str) -> Iterator[None]:
    """However a notice fails to be written or sent, the window goes on."""
    try:
        yield
    except Exception as exc:
        structlog.get_logger().warning("notify_failed", notice=event,
                                       error=redact(f"{type(exc).__name__}: {exc}"))


def contacts_text(contacts: ContactsSection) -> str:
    return "Emergency contacts:\n" + "\n".join(f"  {line}" for line in contacts.lines())


def render(template: str, settings: Settings, **values: str) -> str:
    """A [communication] template filled in; an unknown $name is left as written."""
    defaults = {"window": settings.window.name, "contacts": contacts_text(settings.contacts)}
    return Template(template).safe_substitute({**defaults, **values})
