"""The ``window`` command's entry point: the answers a person waits for, without typer.

``window --help`` / ``-h``, ``window --version`` and ``window status`` of a finished window
are answered here from the standard library and the journal: no typer, rich, pydantic or
config model is imported for them (``tests/unit/test_light.py`` checks ``sys.modules``).
``window run``'s plain forms run without typer too (``orchestrator.cli.direct``): its
start-up is part of every window's overhead. Everything else, and whatever these cannot
answer exactly as the full command line would, goes to ``orchestrator.cli.app``.

Off a terminal no live panel is drawn, so rich is kept out of the process: structlog would
import it (~0.1 s) only to offer tracebacks the window never asks it for. Once the command
has finished, the process leaves with ``os._exit`` after flushing its output and running
the exit handlers, when no thread of its own is still running: the interpreter's teardown of
every module (~0.1 s for the window's imports) changes nothing a window leaves behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

from orchestrator.cli import helptext

HELP_WIDTH_MIN = 80  # click wraps the help to min(columns, 80) - 2: the stored text's width


def main() -> None:
    args = sys.argv[1:]
    answer = quick(args)
    if answer is not None:
        _say(answer)
        leave(0)
    if not _panel_possible():
        sys.modules["rich"] = None  # type: ignore[assignment]  # import rich fails at once
    from orchestrator.cli import direct

    code = direct.main(args)
    if code is not None:
        leave(code)
    from orchestrator.cli.app import main as full

    try:
        full()
    except SystemExit as exc:
        leave(_code(exc.code))
    leave(0)


def quick(args: list[str]) -> str | None:
    """What ``window ARGS`` prints when it can be said without the full command line."""
    if args in (["--help"], ["-h"]):
        return helptext.TEXT if _columns() >= HELP_WIDTH_MIN else None
    if args == ["--version"]:
        from orchestrator import __version__

        return f"window {__version__}"
    if args[:1] == ["status"]:
        from orchestrator.cli import quick as fast

        return fast.status(args[1:])
    return None


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def _panel_possible() -> bool:
    """A live panel may be drawn only on a terminal without NO_COLOR (``log.panel_wanted``)."""
    try:
        return sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        return False


def _say(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `window --help | head -1`: the reader has all it wanted
        leave(0)


def _code(code: object) -> int:
    """An exit status as SystemExit means it: None is 0, a message is said and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def leave(code: int) -> None:
    """Exit with ``code``: at once once output is flushed and exit handlers ran, unless a
    thread of this process (not a daemon) still runs, which the normal exit waits for, or a
    profiler or debugger watches the process."""
    threading = sys.modules.get("threading")  # never imported: no thread ever started
    if sys.getprofile() is not None or sys.gettrace() is not None or (threading and any(
            thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
            for thread in threading.enumerate())):
        raise SystemExit(code)  # a profiler or debugger writes its findings after main
    atexit._run_exitfuncs()  # the log's audit file, temporary folders, logging.shutdown
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say there
            stream.flush()
    os._exit(code)
