"""``window run`` without typer: the window's own start-up is part of every window's overhead.

typer and click cost ~0.1 s to import and to parse ``run``'s options (typer builds pydantic
adapters for them). ``run``'s command line is a handful of options, so its plain forms are
parsed here and the same function runs as under typer (``orchestrator.cli.app.run`` calls
``run`` below too). Anything else (``--help``, a typo, a repeated option, a value that looks
like an option, ``-cPATH``) returns None and the full command line answers, with its
messages and exit codes. The entry's exit handling is typer's (``main`` below): a project
error is one line and its exit code, Ctrl-C before the window drives is Interrupted.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from orchestrator.errors import Interrupted, WindowError

if TYPE_CHECKING:
    from orchestrator.config import Settings

# ``window run``'s options: those that take a value (each spelling) and the flags.
RUN_VALUES = {"--config": "config", "-c": "config", "--confirm": "confirm",
              "--target": "target", "--fleet-run": "fleet_run"}
RUN_FLAGS = {"--force": "force", "--skip-staging": "skip_staging", "--json-logs": "json_logs"}


def main(args: list[str]) -> int | None:
    """``window ARGS`` answered here: its exit code; None when the full command line must
    answer (another command, or a form of ``run`` this does not parse)."""
    if args[:1] != ["run"]:
        return None
    options = parse_run(args[1:])
    if options is None:
        return None
    return guarded(lambda: run(**options))  # type: ignore[arg-type]


def parse_run(args: list[str]) -> dict[str, object] | None:
    """``run``'s options as keyword arguments, or None for anything but their plain forms."""
    return parse(args, RUN_VALUES, RUN_FLAGS)


def parse(args: list[str], values: dict[str, str], flags: dict[str, str]
          ) -> dict[str, object] | None:
    """Options as keyword arguments (``values``: each spelling of an option taking a value,
    by its keyword; ``flags`` likewise), or None for anything but their plain forms: the
    full command line answers those, with its own messages."""
    found: dict[str, object] = {}
    rest = iter(args)
    for arg in rest:
        name, equals, value = arg.partition("=")
        given: str | bool | None
        if name in flags and not equals:
            key, given = flags[name], True
        elif name in values and (name.startswith("--") or not equals):
            key, given = values[name], value if equals else next(rest, None)
            if given is None or (not equals and given.startswith("-")):
                return None
        else:
            return None
        if key in found:  # click keeps the last one; the full command line says so itself
            return None
        found[key] = Path(given) if key == "config" and isinstance(given, str) else given
    return found


def settings(path: Path, *, json_logs: bool = False, target: str | None = None,
             logs: bool = True) -> Settings:
    """The validated config at ``path`` (a fleet target's own with ``target``), logging
    configured first unless ``logs`` is off."""
    from orchestrator import config

    if logs:
        from orchestrator import log

        log.configure(json_lines=json_logs)
    loaded = config.load(path)
    return loaded.for_target(target) if target is not None else loaded


def run(*, config: Path = Path("window.toml"), confirm: str | None = None,
        force: bool = False, skip_staging: bool = False, json_logs: bool = False,
        target: str | None = None, fleet_run: str | None = None) -> int:
    """``window run``: the gates, then the whole window; its exit code."""
    from orchestrator.commands import window

    return window.run(settings(config, json_logs=json_logs, target=target), confirm,
                      force=force, skip_staging=skip_staging, fleet_run=fleet_run)


def guarded(call: Callable[[], int]) -> int:
    """``call``'s exit code, handled as the full command line handles its commands: Ctrl-C
    before a window drives is Interrupted (exit 5, not click's "Aborted!"); a project error
    is one line on stderr and its code; end of input is typer's "Aborted!" (exit 1), a
    KeyboardInterrupt its exit 130, a closed output pipe its silent exit 1."""
    signal.signal(signal.SIGINT, interrupted)
    try:
        return call()
    except WindowError as exc:
        sys.stderr.write(f"window: {one_line(exc.message)}\n")
        return int(exc.exit_code)
    except EOFError:
        sys.stderr.write("\nAborted!\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        return 1


def interrupted(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise Interrupted("interrupted (Ctrl-C) before anything was started; nothing was done.")


def one_line(message: str) -> str:
    """The sentence as one printable line: a newline or an escape sequence in a name the
    user gave (a path, a key, a variable) is shown escaped, never acted on by the terminal."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
