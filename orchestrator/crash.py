"""Crash points: the places where a window commits to its journal or acts on the world.

A test-only switch makes the process die there at once, with ``os._exit``, as ``kill -9``
would (no ``finally``, no flush, no lease release):

    WINDOW_CRASH_AT="journal.conclude_phase.migrate#1"   die at the first time this point is passed
    WINDOW_CRASH_RECORD=/path/points.txt                  append every point passed, in order

Each point is named by where it is and, when one place is passed several times in a run, by
the occurrence (``#2``). The switch is read here, once, when this module is imported; unset
(always, outside the crash tests) every point costs one comparison.
"""

from __future__ import annotations

import os
from collections import Counter

CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL
_AT = os.environ.get("WINDOW_CRASH_AT") or None
_RECORD = os.environ.get("WINDOW_CRASH_RECORD") or None
_passed: Counter[str] = Counter()


def point(name: str) -> None:
    """This process passes the crash point ``name``."""
    if _AT is None and _RECORD is None:
        return
    _passed[name] += 1
    here = f"{name}#{_passed[name]}"
    if _RECORD is not None:
        with open(_RECORD, "a", encoding="utf-8") as record:  # noqa: PTH123 - a hot path
            record.write(here + "\n")
    if here == _AT:
        os._exit(CRASH_EXIT_CODE)
