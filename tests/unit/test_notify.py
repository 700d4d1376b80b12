"""Contacts that refuse a window, and the notice texts people receive."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.commands import plan
from orchestrator.engine import notify
from orchestrator.errors import ConfigError, UsageError
from tests.support.settings import make_settings

FILLED = {"on_call": "Maria +30 691 000 0001", "backup": "Nikos +30 691 000 0002",
          "db_support": "dba@example.com", "decision_maker": "Eleni (CTO)"}


def settings(**sections: object) -> config.Settings:
    """The shop's settings (its name heads every notice) with these sections."""
    return make_settings(Path(), window={"name": "shop-prod", "confirm_phrase": "X"},
                         **sections)


def test_filled_contacts_pass() -> None:
    config.require_contacts(settings(contacts=FILLED).contacts)


@pytest.mark.parametrize(("value", "said"), [
    ("", "empty"), ("   ", "empty"), ("[FILL IN]", "placeholder"), ("TODO", "placeholder"),
    ("tbd", "placeholder"), ("<name, phone>", "placeholder"), ("xxx-xxx", "placeholder"),
])
def test_unfilled_contacts_are_refused_naming_the_key(value: str, said: str) -> None:
    contacts = settings(contacts={**FILLED, "db_support": value}).contacts
    with pytest.raises(ConfigError, match=rf"\[contacts\] db_support is .*{said}") as caught:
        config.require_contacts(contacts)
    assert caught.value.exit_code == 2


def test_missing_contacts_section_is_refused_at_plan_time_not_load_time() -> None:
    loaded = settings()  # loads: unit tests and old configs build Settings without contacts
    assert config.unfilled_contacts(loaded.contacts) == list(FILLED)


def test_failure_texts_carry_the_contacts_and_the_next_step() -> None:
    sent: list[tuple[str, str, str]] = []

    class Recorder(notify.Notifier):
        def send(self, event: str, title: str, body: str) -> bool:
            sent.append((event, title, body))
            return True

    notices = notify.Notices(settings(contacts=FILLED), "run1",
                             Recorder(settings(contacts=FILLED)))
    notices.finished("needs_attention", "Take the banner down by hand: php artisan up")
    notices.finished("completed")
    (event, title, body), (_, done_title, done_body) = sent
    assert (event, title) == ("window_needs_attention", "[shop-prod] NEEDS ATTENTION")
    assert "on_call: Maria +30 691 000 0001" in body
    assert "Take the banner down by hand: php artisan up" in body
    assert done_title == "[shop-prod] completed"
    assert "Maria" not in done_body


def test_templates_are_configurable_and_unknown_names_stay_as_written() -> None:
    custom = settings(communication={"during": "$window now $state ($unknown)"})
    assert notify.render(custom.communication.during, custom, state="up") == \
        "shop-prod now up ($unknown)"


def test_an_unknown_template_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key communication\.before"):
        settings(communication={"before": "x"})


def test_local_time_reads_the_zone() -> None:
    start = plan.local_time("2026-07-01 02:00", "Europe/Athens")
    assert start.strftime("%H:%M %Z") == "02:00 EEST"
    with pytest.raises(UsageError, match="--at '1 Dec' is not a time"):
        plan.local_time("1 Dec", "Europe/Athens")
    with pytest.raises(UsageError, match="--tz 'Nowhere/Else' is not a time zone"):
        plan.local_time("2026-07-01 02:00", "Nowhere/Else")


def test_no_urls_means_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINDOW_NOTIFY_URLS", raising=False)
    quiet = notify.Notifier(settings(notify={"urls_env": "WINDOW_NOTIFY_URLS"}))
    assert not quiet.configured
    assert quiet.send("x", "t", "b")  # nothing to fail
