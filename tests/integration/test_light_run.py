"""``window run`` through the entry point runs without typer, click or rich (its start-up is
part of every window's overhead, issue 16), and a whole window completes that way, with
every option the fleet passes it."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.commands import demo
from tests.support.shop import Shop

LEFT_OUT = {"typer", "click", "rich"}
# The entry point as the `window` script runs it, saying at exit every module it had loaded
# (its exit handlers run even on its quick exit).
SHOW_MODULES = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
                "'MODULES ' + ' '.join(sorted(m for m, v in sys.modules.items() if v))"
                " + '\\n'))\n"
                "sys.argv = ['window', *sys.argv[1:]]\n"
                "from orchestrator.cli.light import main\nmain()")


def imported(stderr: str) -> set[str]:
    line = next(x for x in stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


def test_a_whole_window_runs_without_the_full_command_line(shop: Shop) -> None:
    done = subprocess.run([sys.executable, "-c", SHOW_MODULES, "run",
                           "-c", str(shop.config), f"--confirm={demo.PHRASE}", "--json-logs",
                           "--fleet-run", "f1"],
                          cwd=shop.folder, env=shop.env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    modules = imported(done.stderr)
    assert "orchestrator.cli.direct" in modules and "phases.backup" in modules
    assert {m for m in modules if m.split(".")[0] in LEFT_OUT
            or m.startswith("orchestrator.cli.app")} == set()
    assert shop.status()["state"] == "completed"
    again = shop.window("run", "--confirm", demo.PHRASE, "--fleet-run", "f1")
    assert again.returncode == 0, again.stderr
    assert "already ended completed in this fleet run" in again.stdout
