"""Every refusal before production changes: exit 3 (gates) or 2 (config), one sentence."""

from __future__ import annotations

import shutil

import pytest

from orchestrator.commands import demo
from tests.support.shop import Shop

SLOW_MIGRATE = 'if [ "$WINDOW_PHASE" = migrate ]; then sleep 60 & echo $! > sleeper.pid; wait; fi'


def assert_refused(shop: Shop, done: object, code: int, *words: str) -> None:
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == code, stderr  # type: ignore[attr-defined]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("window: "), stderr
    for word in words:
        assert word in message
    assert "Traceback" not in stderr
    assert shop.banner_log() == []


def test_missing_target_variable_is_named(shop: Shop) -> None:
    del shop.env["DATABASE_URL"]
    assert_refused(shop, shop.run_window(), 3, "DATABASE_URL")


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("--confirm", "DEMO-PROD-ok"), None),  # wrong phrase on the command line
        ((), None),  # no phrase, stdin closed
        ((), "yes\n"),  # a wrong phrase typed
    ],
    ids=["wrong-flag", "closed-stdin", "wrong-typed"],
)
def test_confirmation_phrase_must_match(shop: Shop, args: tuple[str, ...],
                                        stdin: str | None) -> None:
    before = shop.fingerprint()
    done = shop.window("run", *args, **({"input": stdin} if stdin else {}))
    assert_refused(shop, done, 3, "phrase")
    assert shop.fingerprint() == before


def test_outside_a_git_repository_is_refused(shop: Shop) -> None:
    shutil.rmtree(shop.folder / ".git")
    assert_refused(shop, shop.run_window(), 3, "git repository")


def test_second_run_while_one_runs_is_refused(shop: Shop) -> None:
    shop.configure(migrate=SLOW_MIGRATE)
    first, _sleeper = shop.start_until_sleeping()

    second = shop.run_window()

    assert second.returncode == 6, second.stderr  # busy: nothing was done
    assert "another window is running" in second.stderr
    assert shop.window("abort", "--confirm", demo.PHRASE).returncode == 0
    assert first.wait(timeout=60) == 1


def test_second_state_folder_on_the_same_target_is_refused(shop: Shop) -> None:
    shop.configure(migrate=SLOW_MIGRATE)
    first, _sleeper = shop.start_until_sleeping()
    other = shop.folder / "elsewhere.toml"
    other.write_text(shop.config.read_text() + '\n', encoding="utf-8")
    text = other.read_text().replace('confirm_phrase = "DEMO-PROD-OK"',
                                     'confirm_phrase = "DEMO-PROD-OK"\nstate_dir = ".other"')
    other.write_text(text)

    second = shop.window("run", "-c", str(other), "--confirm", demo.PHRASE)

    assert second.returncode == 6, second.stderr
    assert "another window holds" in second.stderr
    assert shop.window("abort", "--confirm", demo.PHRASE).returncode == 0
    assert first.wait(timeout=60) == 1


BAD_CONFIGS = {
    "toml-syntax": ('[window\nname = "x"\n', "line 1"),
    "unknown-key": ('[window]\nconfirm_phrase = "X"\ncolour = "red"\n'
                    '[banner]\non = "true"\noff = "true"\n[migrate]\ncommand = "true"\n',
                    "unknown key window.colour"),
    "negative-timeout": ('[window]\nconfirm_phrase = "X"\n[banner]\non = "true"\noff = "true"\n'
                         '[migrate]\ncommand = "true"\n[timeouts]\nmigrate = -5\n',
                         "timeouts.migrate"),
    "missing-phrase": ('[window]\nname = "x"\n[banner]\non = "true"\noff = "true"\n'
                       '[migrate]\ncommand = "true"\n', "window.confirm_phrase"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["run", "plan"])
def test_bad_config_is_one_sentence_and_exit_2(shop: Shop, case: str, command: str) -> None:
    text, named = BAD_CONFIGS[case]
    shop.config.write_text(text)

    done = shop.window(command, "--confirm", demo.PHRASE) if command == "run" \
        else shop.window(command)

    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_plan_shows_the_window_without_secrets(shop: Shop) -> None:
    done = shop.window("plan")

    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{shop.cluster.port}/{shop.prod_db}" in done.stdout
    assert "migrate" in done.stdout and "300s" in done.stdout
    assert demo.APP_PASSWORD not in done.stdout
    assert not (shop.folder / ".window").exists(), "plan must touch nothing"


def test_plan_without_the_variables_is_a_usage_error(shop: Shop) -> None:
    del shop.env["DATABASE_URL_STAGING"]
    done = shop.window("plan")
    assert done.returncode == 2
    assert "DATABASE_URL_STAGING" in done.stderr


def test_unwritable_state_folder_is_a_config_error(shop: Shop) -> None:
    (shop.folder / "notadir").write_text("")
    shop.config.write_text(shop.config.read_text().replace(
        'confirm_phrase = "DEMO-PROD-OK"',
        'confirm_phrase = "DEMO-PROD-OK"\nstate_dir = "notadir/state"'))
    assert_refused(shop, shop.run_window(), 2, "state folder")


def test_missing_workdir_fails_the_rehearsal_without_a_traceback(shop: Shop) -> None:
    shop.config.write_text(shop.config.read_text().replace(
        "[migrate]\n", '[migrate]\nworkdir = "frontend"\n'))
    done = shop.run_window()
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot start" in shop.phase("staging_dry_run")["error"]
