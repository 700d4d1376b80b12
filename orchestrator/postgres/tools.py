"""Find PostgreSQL's client and server programs, new enough for the server they talk to.

pg_dump refuses to dump a server newer than itself, so the version matters as much as the
name. Debian keeps every installed major under /usr/lib/postgresql/<major>/bin.
``WINDOW_PG_BINDIR`` names the one folder to take them from instead (several versions
installed, or a build of one's own).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from orchestrator.errors import PhaseFailed

DEBIAN_ROOT = Path("/usr/lib/postgresql")
BINDIR_ENV = "WINDOW_PG_BINDIR"


@functools.cache  # a program's version does not change while a window runs
def major(program: Path) -> int | None:
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except OSError:
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def candidates(name: str) -> list[Path]:
    """``name`` from PATH first, then Debian's versioned folders, newest first. Debian's
    ``pg_wrapper`` on PATH (a Perl script, ~40 ms a call) would only run one of those
    versioned programs: they come first then."""
    if chosen := os.environ.get(BINDIR_ENV):
        return [Path(chosen) / name]
    found = [Path(p) for p in [shutil.which(name)] if p]
    versioned = sorted(DEBIAN_ROOT.glob(f"*/bin/{name}"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0, reverse=True)
    if found and found[0].resolve().name == "pg_wrapper" and versioned:
        return versioned + found
    return found + versioned


def find(name: str, min_major: int = 0) -> Path:
    for program in candidates(name):
        found = major(program)
        if found is not None and found >= min_major:
            return program
    need = f" {min_major} or newer" if min_major else ""
    where = os.environ.get(BINDIR_ENV) or f"PATH or under {DEBIAN_ROOT}"
    seen = ", ".join(f"{p} is {major(p) or '?'}" for p in candidates(name) if p.exists())
    install = (f"; install postgresql-client-{min_major} (on Debian or Ubuntu from the"
               " PostgreSQL project's apt repository, pgdg): the server is newer than these"
               " client programs") if min_major else ""
    raise PhaseFailed(f"{name}{need} was not found in {where}"
                      f"{f' ({seen})' if seen else ''}{install}.")
