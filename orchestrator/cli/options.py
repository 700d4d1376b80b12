"""The options that several commands share, defined once for the window's and the fleet's
command lines, and the typer app settings they share (no locals in tracebacks: they hold
database URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

APP_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "pretty_exceptions_show_locals": False,
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
