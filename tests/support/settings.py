"""``orchestrator.config.Settings`` for a unit test, from the least a window.toml needs.

Unit tests build settings from a mapping rather than a file; each used to carry its own
minimal mapping and factory. ``make_settings(folder, **sections)`` is that factory: every
keyword is a whole ``[section]`` (or a list such as ``checks``) replacing the minimal one,
and the config is read as if from ``folder/window.toml`` (the state folder is
``folder/.window``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from orchestrator import config

MINIMAL: dict[str, Any] = {
    "window": {"confirm_phrase": "X"},
    "banner": {"on": "true", "off": "true"},
    "migrate": {"command": "true"},
}


def make_settings(folder: Path, **sections: Any) -> config.Settings:
    """Settings from ``MINIMAL`` with ``sections`` replacing or adding whole sections, as
    loaded from ``folder / "window.toml"``."""
    return config.from_mapping(copy.deepcopy({**MINIMAL, **sections}), folder / "window.toml")
