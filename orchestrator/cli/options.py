"""The options that several commands share, defined once for the window's and the fleet's
command lines, and the typer app settings they share (no locals in tracebacks: they hold
database URLs)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

APP_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "pretty_exceptions_show_locals": False,
    # click's plain help: rich's panels would import rich (~0.1 s) for every --help.
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Path to window.toml.", show_default=True)
]
ConfirmOption = Annotated[str | None, typer.Option(
    "--confirm", help="The confirmation phrase; asked for on stdin if omitted.")]
JsonLogsOption = Annotated[bool, typer.Option(
    "--json-logs", help="Print the audit events on stderr as JSON lines, not readable ones.")]
# One target of a fleet (`window fleet` passes it to the windows it starts).
TargetOption = Annotated[str | None, typer.Option(
    "--target", help="A fleet target's own window (its state under targets/NAME).")]


def whole_sentences(app: typer.Typer) -> None:
    """List each command by its whole first sentence: plain click help would cut it at the
    width left beside the names ("... reuses a...")."""
    for info in app.registered_commands:
        if info.short_help is None and info.callback is not None and info.callback.__doc__:
            info.short_help = inspect.cleandoc(info.callback.__doc__).split("\n\n")[0]
