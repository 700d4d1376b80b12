"""``window status`` of a finished window, answered without the config model.

A finished window's status needs two keys of ``window.toml`` (``[window] state_dir`` and
``[state] backend``) and the journal: no typer, no pydantic, no validation of the rest of
the file, so a key broken elsewhere does not hide how the last window ended. Whatever this
cannot answer exactly as the full command would (an S3 state, a fleet target, a window still
running or needing attention, no journal, an option it does not know, a file it cannot read)
returns None, and the full command answers instead, with its messages and exit codes.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20  # as orchestrator.config: a config is a few kilobytes


def status(args: list[str]) -> str | None:
    """What ``window status ARGS`` prints for a finished window, or None to ask the full
    command."""
    parsed = _parse(args)
    if parsed is None:
        return None
    config, as_json = parsed
    state_dir = _state_dir(config)
    if state_dir is None:
        return None
    from orchestrator.engine.journal import Journal
    from orchestrator.reporting import status as reporting

    journal = Journal.existing(state_dir)
    if journal is None:
        return None
    try:
        run = journal.latest_run()
        # Where status asks the server (production missing, what a window left): the full path.
        if run is None or reporting.asks_server(journal, run):
            return None
        report = reporting.status(journal, run)
    finally:
        journal.close()
    return json.dumps(report, indent=2) if as_json else reporting.table(report)


def _parse(args: list[str]) -> tuple[Path, bool] | None:
    """``--config PATH`` / ``-c PATH`` / ``--config=PATH`` and ``--json``; anything else
    (``--help``, ``--target``, a typo) is the full command's to answer."""
    from orchestrator.cli import direct

    found = direct.parse(args, {"--config": "config", "-c": "config"}, {"--json": "json"})
    if found is None:
        return None
    return Path(str(found.get("config", "window.toml"))), bool(found.get("json"))


def _state_dir(config: Path) -> Path | None:
    """The state folder of a local state, as ``Settings.state_dir`` resolves it; None when
    the file cannot be read, is not TOML, or names another backend."""
    try:
        with config.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        raw = tomllib.loads(data.decode("utf-8")) if len(data) <= MAX_CONFIG_BYTES else None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    if raw is None:
        return None
    window, state = raw.get("window"), raw.get("state", {})
    if not isinstance(window, dict) or not isinstance(state, dict):
        return None
    relative = window.get("state_dir", ".window")
    if state.get("backend", "local") != "local" or not isinstance(relative, str) \
            or not relative or "\x00" in relative:
        return None
    return (config.resolve().parent / relative).resolve()
