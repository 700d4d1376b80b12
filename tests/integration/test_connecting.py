"""Connecting: a wrong password or a missing database is said at once (exit 2 from plan and run
alike), a server that does not answer is waited for with a line per attempt, and Ctrl-C
while waiting, or at the phrase prompt, is an interruption (exit 5), never a traceback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from orchestrator.commands import demo
from orchestrator.postgres.cluster import free_port
from tests.support.shop import Shop
from tests.support.waiting import wait_until


def audit_events(shop: Shop) -> list[str]:
    lines = (shop.folder / ".window" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines if line.strip()]


@pytest.mark.parametrize("command", [("plan",), ("run", "--confirm", demo.PHRASE)])
def test_a_wrong_password_is_said_at_once_with_exit_2(shop: Shop,
                                                      command: tuple[str, ...]) -> None:
    shop.configure()
    before = shop.fingerprint()
    shop.env["DATABASE_URL"] = shop.cluster.url(shop.prod_db, user=demo.APP_USER,
                                                password="not-the-password")

    started = time.monotonic()
    done = shop.window(*command)
    took = time.monotonic() - started

    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert took < 5, f"a wrong password took {took:.1f}s to refuse"
    assert "password authentication failed" in done.stderr, said
    assert f"127.0.0.1:{shop.cluster.port}/{shop.prod_db}" in done.stderr
    assert "not-the-password" not in said and "Traceback" not in said
    assert shop.fingerprint() == before


@pytest.mark.parametrize("command", [("plan",), ("run", "--confirm", demo.PHRASE)])
def test_a_missing_database_is_said_at_once_with_exit_2(shop: Shop,
                                                       command: tuple[str, ...]) -> None:
    shop.configure()
    shop.env["DATABASE_URL"] = shop.prod_url.replace(f"/{shop.prod_db}", "/no_such_shop")

    done = shop.window(*command)

    assert done.returncode == 2, done.stdout + done.stderr
    assert 'database "no_such_shop" does not exist' in done.stderr


def test_ctrl_c_while_a_database_is_waited_for_exits_5(shop: Shop) -> None:
    shop.configure()
    before = shop.fingerprint()
    silent = free_port()  # nothing listens there: every attempt is refused, and retried
    shop.env["DATABASE_URL"] = shop.prod_url.replace(f":{shop.cluster.port}/", f":{silent}/")
    window = shop.start("run", "--confirm", demo.PHRASE)

    wait_until(lambda: "waiting_for_database" in shop.background_output(),
               what="a line per connection attempt", seconds=30)
    window.send_signal(signal.SIGINT)

    assert window.wait(timeout=30) == 5, shop.background_output()
    output = shop.background_output()
    assert re.search(r"waiting_for_database .*attempt='1 of \d+'", output), output
    assert f"production 127.0.0.1:{silent}/{shop.prod_db}" in output
    assert "Connection refused" in output
    assert "window: interrupted (Ctrl-C) before anything was started" in output
    assert "Traceback" not in output
    assert "command_interrupted" in audit_events(shop)
    assert shop.fingerprint() == before


def test_ctrl_c_at_the_phrase_prompt_is_an_interruption(shop: Shop) -> None:
    shop.configure()
    err_file = shop.folder.parent / "prompt.err"
    with err_file.open("w") as err:
        prompt = subprocess.Popen(shop._argv(("run",)), cwd=shop.folder, env=shop.env,
                                  text=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=err)
    try:
        # The prompt names the plan, then waits for a line that never comes.
        wait_until(lambda: "to proceed:" in err_file.read_text(), what="the phrase prompt",
                   seconds=30)
        prompt.send_signal(signal.SIGINT)
        assert prompt.wait(timeout=30) == 5, err_file.read_text()
    finally:
        if prompt.poll() is None:
            prompt.kill()
            prompt.wait()
        if prompt.stdin is not None:
            prompt.stdin.close()
    said = err_file.read_text()
    assert "interrupted (Ctrl-C)" in said
    assert "standard input closed or silent" not in said and "Traceback" not in said
    assert shop.banner_log() == []
