"""``window status`` of a real finished window answers through the light entry point: the
same text and JSON as the full command line, without typer, pydantic, rich or the config
model, and still when a key of window.toml unrelated to the state is broken."""

from __future__ import annotations

import json
import subprocess
import sys

from orchestrator.commands import demo
from tests.support.shop import Shop

HEAVY = {"typer", "rich", "pydantic", "pydantic_core", "structlog", "psycopg", "click"}
FULL_STATUS = ("import sys; sys.argv = ['window', 'status', *sys.argv[1:]]\n"
               "from orchestrator.cli.app import main\nmain()")


def imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_status_of_a_finished_window_through_the_light_path(shop: Shop) -> None:
    done = shop.run_window()
    assert done.returncode == 0, done.stdout + done.stderr
    for args in ([], ["--json"]):
        light = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator",
                                "status", *args], cwd=shop.folder, env=shop.env, text=True,
                               capture_output=True, timeout=60, check=False)
        assert light.returncode == 0, light.stderr
        modules = imported(light.stderr)
        assert "orchestrator.engine.journal" in modules
        assert {m for m in modules if m.split(".")[0] in HEAVY
                or m.startswith(("orchestrator.config", "orchestrator.cli.app"))} == set()
        full = subprocess.run([sys.executable, "-c", FULL_STATUS, *args], cwd=shop.folder,
                              env=shop.env, text=True, capture_output=True, timeout=60,
                              check=False)
        assert full.returncode == 0, full.stderr
        assert light.stdout == full.stdout
    report = json.loads(light.stdout)
    assert report["state"] == "completed"
    assert report["backup"]["verified"] is True

    shop.config.write_text(shop.config.read_text() + '\n[monitor]\ninterval = "often"\n')
    broken = shop.window("status")
    assert broken.returncode == 0, broken.stderr
    assert f"window {report['run_id']}: completed" in broken.stdout
    refused = shop.window("plan")
    assert refused.returncode == 2
    assert "monitor.interval" in refused.stderr
    assert shop.window("run", "--confirm", demo.PHRASE).returncode == 2
