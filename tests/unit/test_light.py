"""The light entry point (``orchestrator.cli.light``): ``--help``, ``-h``, ``--version`` and
``status`` of a finished window answered without typer, rich, pydantic or the config model,
exactly as the full command line answers them; everything else handed to the full one.

Run as a module (``python -m tests.unit.test_light``) it writes ``orchestrator/cli/
helptext.py`` again from typer's own ``--help``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from orchestrator import __version__
from orchestrator.cli import app, direct, fleet, helptext, light
from orchestrator.engine import machine
from orchestrator.engine.facts import FOLLOW, FollowFacts
from orchestrator.engine.journal import Journal
from orchestrator.engine.rows import PhaseStatus
from orchestrator.reporting import status as reporting
from tests.support.settings import make_settings

RUN = "20260101_120000_abcd"
HEAVY = {"typer", "rich", "pydantic", "pydantic_core", "structlog", "psycopg", "click"}
# The modules of the project a light answer never needs: the command line and the config.
FULL = ("orchestrator.cli.app", "orchestrator.config")
SHOW_MODULES = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
                "'MODULES ' + ' '.join(sorted(m for m, v in sys.modules.items() if v))"
                " + '\\n'))\n"
                "sys.argv = ['window', *sys.argv[1:]]\n"
                "from orchestrator.cli.light import main\nmain()")
MINIMAL_TOML = """
[window]
confirm_phrase = "X"

[banner]
on = "true"
off = "true"

[migrate]
command = "true"
"""


def typer_help(columns: int = 80) -> str:
    """``window --help`` from the full command line (typer), ``columns`` wide."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv = ['window', '--help']\n"
         "from orchestrator.cli.app import main\nmain()"],
        env={**os.environ, "COLUMNS": str(columns)}, capture_output=True, text=True,
        check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def window(*args: str, cwd: Path | None = None, columns: int = 100
           ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The entry point run as ``window ARGS`` (through light.main, as the script does); its
    result and every module it had imported by the time it left (its exit handlers run
    even on the quick exit)."""
    done = subprocess.run([sys.executable, "-c", SHOW_MODULES, *args], cwd=cwd,
                          env={**os.environ, "COLUMNS": str(columns)}, capture_output=True,
                          text=True, check=False, timeout=60)
    line = next((x for x in done.stderr.splitlines() if x.startswith("MODULES ")), None)
    assert line is not None, done.stderr
    return done, set(line.split()[1:])


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(FULL)}


def test_stored_help_is_typers_help() -> None:
    assert typer_help() == helptext.TEXT + "\n", (
        "the help changed: write orchestrator/cli/helptext.py again with"
        " `.venv/bin/python -m tests.unit.test_light`")


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_help_imports_nothing_heavy(option: str) -> None:
    done, modules = window(option)
    assert done.returncode == 0, done.stderr
    assert done.stdout == typer_help()
    assert heavy(modules) == set()


def test_help_on_a_narrow_terminal_is_typers_own() -> None:
    """Fewer than 80 columns wrap differently: the full command line answers."""
    done, modules = window("--help", columns=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == typer_help(columns=60)
    assert done.stdout != helptext.TEXT + "\n"
    assert "typer" in {m.split(".")[0] for m in modules}


def test_version_light_and_full() -> None:
    done, modules = window("--version")
    assert (done.returncode, done.stdout) == (0, f"window {__version__}\n")
    assert heavy(modules) == set()
    result = CliRunner().invoke(app.app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"window {__version__}\n")


def commands() -> list[list[str]]:
    names = [[info.name or info.callback.__name__] for info in app.app.registered_commands
             if info.callback is not None]
    fleet_names = [["fleet", info.name or info.callback.__name__]
                   for info in fleet.app.registered_commands if info.callback is not None]
    return [*names, ["fleet"], *fleet_names]


def test_every_command_takes_dash_h() -> None:
    runner = CliRunner()
    seen = commands()
    assert len(seen) >= 20 and ["status"] in seen and ["fleet", "status"] in seen
    for argv in seen:
        short = runner.invoke(app.app, [*argv, "-h"], prog_name="window")
        long = runner.invoke(app.app, [*argv, "--help"], prog_name="window")
        assert short.exit_code == 0, (argv, short.output)
        assert short.output.startswith(f"Usage: window {' '.join(argv)} "), short.output
        assert short.output == long.output
        assert "-h, --help" in short.output


def test_command_list_keeps_whole_sentences() -> None:
    """Plain click help would cut "... `run` reuses a..."; each command's sentence is whole."""
    text = " ".join(helptext.TEXT.split())
    assert "`run` reuses a recent success." in text
    assert not any(line.endswith("...") for line in helptext.TEXT.splitlines()[1:])


# status of a finished window --------------------------------------------------------------

def finished_window(folder: Path, state: str = "completed") -> Path:
    """A project whose journal holds one window that ended in ``state``; its config path."""
    config = folder / "window.toml"
    config.write_text(MINIMAL_TOML)
    journal = Journal.open(folder / ".window")
    try:
        journal.create_run(RUN, [str(p) for p in machine.phases()], {"target": "db/shop"})
        journal.start_phase(RUN, "preflight", time.time() + 120, 120.0)
        journal.conclude_phase(RUN, "preflight", PhaseStatus.SUCCEEDED, None,
                               trigger="succeeded", state=state)
        journal.skip_pending(RUN)
        journal.finish(RUN, 0 if state == "completed" else 3)
    finally:
        journal.close()
    return config


def full_status(folder: Path, as_json: bool) -> str:
    return reporting.show(make_settings(folder), as_json)


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_a_finished_window_is_light_and_the_same(tmp_path: Path,
                                                           as_json: bool) -> None:
    finished_window(tmp_path)
    done, modules = window("status", *(["--json"] if as_json else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == full_status(tmp_path, as_json) + "\n"
    assert heavy(modules) == set()
    if as_json:
        assert json.loads(done.stdout)["state"] == "completed"


def test_status_with_config_option_forms(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    config = finished_window(tmp_path / "project")
    expected = full_status(tmp_path / "project", False)
    for form in (["--config", str(config)], ["-c", str(config)], [f"--config={config}"]):
        assert light.quick(["status", *form]) == expected


def test_status_survives_a_broken_unrelated_key(tmp_path: Path) -> None:
    """The full command refuses the config; the light one still says how the window ended."""
    config = finished_window(tmp_path)
    config.write_text(MINIMAL_TOML + '\n[monitor]\ninterval = "often"\n')
    done, modules = window("status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"window {RUN}: completed" in done.stdout
    assert heavy(modules) == set()
    refused, _ = window("plan", cwd=tmp_path)
    assert refused.returncode == 2
    assert "monitor" in refused.stderr


def followed(folder: Path, *, cleared: bool) -> None:
    """The finished window's standby followed production; what it made on the server was
    dropped (caught up), or may still be there (following, when the process died)."""
    journal = Journal.open(folder / ".window")
    try:
        journal.put(RUN, FOLLOW, FollowFacts(mode="follow",
                                             state="caught_up" if cleared else "following"))
    finally:
        journal.close()


def test_status_of_a_window_that_cleared_what_it_made_is_light(tmp_path: Path) -> None:
    finished_window(tmp_path)
    followed(tmp_path, cleared=True)
    assert light.quick(["status", "--config", str(tmp_path / "window.toml")]) is not None
    done, modules = window("status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert heavy(modules) == set()


@pytest.mark.parametrize("case", ["running", "needs_attention", "target", "typo", "help",
                                  "s3", "no journal", "bad toml", "left on the server"])
def test_status_it_cannot_answer_goes_to_the_full_command(tmp_path: Path, case: str) -> None:
    config = finished_window(tmp_path, state="needs_attention" if case == "needs_attention"
                             else "completed")
    args = {"target": ["--target", "a"], "typo": ["--jsn"], "help": ["--help"]}.get(case, [])
    if case == "running":
        journal = Journal.open(tmp_path / ".window")
        journal.transition(RUN, "completed", "resumed", "migrate")
        journal.close()
    elif case == "s3":
        config.write_text(MINIMAL_TOML + '\n[state]\nbackend = "s3"\nuri = "s3://b/p"\n')
    elif case == "no journal":
        (tmp_path / ".window" / "journal.sqlite").unlink()
    elif case == "bad toml":
        config.write_text("[window\n")
    elif case == "left on the server":  # status asks the server what the window left
        followed(tmp_path, cleared=False)
    assert light.quick(["status", *args]) is None or case == "help"
    done, modules = window("status", *args, cwd=tmp_path)
    assert "typer" in {m.split(".")[0] for m in modules}, case
    assert "Traceback" not in done.stderr


def test_other_commands_go_to_the_full_command(tmp_path: Path) -> None:
    done, modules = window("history", "--limit", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "typer" in {m.split(".")[0] for m in modules}
    assert light.quick(["history"]) is None
    assert light.quick(["--help", "status"]) is None


def test_exit_code_kept_and_rich_kept_out_off_a_terminal(tmp_path: Path) -> None:
    """The full command's exit code survives the quick exit; stderr is no terminal, so no
    panel can be drawn and rich is never imported, structlog included."""
    (tmp_path / "window.toml").write_text(MINIMAL_TOML + "\n[nonsense]\n")
    done, modules = window("backups", cwd=tmp_path)  # an unknown key: a usage error, exit 2
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("window: ")
    assert "rich" not in {m.split(".")[0] for m in modules}


# run without typer ---------------------------------------------------------------------------

def full_window(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``window ARGS`` through typer's command line (``orchestrator.cli.app``)."""
    return subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['window',"
                           " *sys.argv[1:]]\nfrom orchestrator.cli.app import main\nmain()",
                           *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "expected"), [
    ([], {}),
    (["--config", "a.toml", "--confirm", "X"], {"config": Path("a.toml"), "confirm": "X"}),
    (["-c", "a.toml", "--confirm=X=Y"], {"config": Path("a.toml"), "confirm": "X=Y"}),
    (["--config=a.toml", "--confirm", ""], {"config": Path("a.toml"), "confirm": ""}),
    (["--force", "--skip-staging", "--json-logs", "--target", "t", "--fleet-run=f"],
     {"force": True, "skip_staging": True, "json_logs": True, "target": "t",
      "fleet_run": "f"}),
])
def test_run_options_parsed_as_typer_passes_them(args: list[str], expected: dict[str, object],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert direct.parse_run(args) == expected
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(direct.run).parameters.items()}  # typer's too, or this fails
    called: list[dict[str, object]] = []  # what typer hands the same function, for the same args
    monkeypatch.setattr(direct, "run", lambda **kwargs: called.append(kwargs) or 0)
    result = CliRunner().invoke(app.app, ["run", *args])
    assert result.exit_code == 0, result.output
    assert called == [{**defaults, **expected}]


def test_run_parses_every_option_typer_knows() -> None:
    """An option added to typer's ``run`` is added here too (until then, each use of it would
    go through typer: correct, but slow)."""
    command = typer.main.get_command(app.app).commands["run"]  # type: ignore[attr-defined]
    spellings = {opt for param in command.params for opt in param.opts
                 if opt not in ("-h", "--help")}
    assert spellings == set(direct.RUN_VALUES) | set(direct.RUN_FLAGS)


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["--colour"], ["--config"], ["--confirm", "-x"], ["-c=a.toml"],
    ["-ca.toml"], ["--force=yes"], ["--force", "--force"], ["--config", "a", "-c", "b"],
    ["extra"], ["--"],
])
def test_run_forms_it_does_not_parse_go_to_typer(args: list[str]) -> None:
    assert direct.parse_run(args) is None
    assert direct.main(["run", *args]) is None
    assert direct.main(["plan"]) is None


def test_run_without_typer_says_what_typer_says(tmp_path: Path) -> None:
    """A refused ``window run`` (no config here) through the entry point imports neither
    typer, click nor rich, and says the same sentence with the same code as the full command
    line; ``run --help`` is typer's."""
    done, modules = window("run", "--confirm", "X", cwd=tmp_path)
    full = full_window("run", "--confirm", "X", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (full.returncode, full.stdout) == (2, "")
    assert done.stderr.split("MODULES ")[0] == full.stderr
    assert full.stderr.startswith("window: ") and "window.toml" in full.stderr
    assert not {m.split(".")[0] for m in modules} & {"typer", "click", "rich"}
    assert "orchestrator.cli.app" not in modules
    help_done, help_modules = window("run", "--help", cwd=tmp_path)
    assert help_done.returncode == 0 and help_done.stdout.startswith("Usage: window run ")
    assert "typer" in {m.split(".")[0] for m in help_modules}


def test_leave_keeps_the_code_and_waits_for_a_running_thread(tmp_path: Path) -> None:
    """The quick exit runs the exit handlers and keeps the code; a thread still at work (not a
    daemon) gets the normal exit, which waits for it."""
    script = ("import atexit, sys, threading, time\n"
              "from pathlib import Path\n"
              "from orchestrator.cli.light import leave\n"
              "folder = Path(sys.argv[1])\n"
              "atexit.register(lambda: (folder / 'handled').write_text('yes'))\n"
              "if sys.argv[2] == 'thread':\n"
              "    threading.Thread(target=lambda: (time.sleep(0.3),"
              " (folder / 'thread').write_text('done'))).start()\n"
              "print('said', flush=False)\n"
              "leave(4)\n")
    for mode in ("alone", "thread"):
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path), mode],
                              capture_output=True, text=True, check=False, timeout=60)
        assert (done.returncode, done.stdout) == (4, "said\n"), done.stderr
        assert (tmp_path / "handled").read_text() == "yes"
        assert (tmp_path / "thread").exists() == (mode == "thread")


def write_helptext() -> None:
    """``orchestrator/cli/helptext.py`` from typer's own ``--help``, 80 columns wide."""
    body = typer_help().removesuffix("\n").replace("\\", "\\\\")
    path = Path(helptext.__file__)
    head = path.read_text().split('TEXT = """', 1)[0]
    path.write_text(f'{head}TEXT = """\\\n{body}"""\n')


if __name__ == "__main__":
    write_helptext()
