"""Waiting for something a test can observe, never for a fixed time: one bounded poll that
fails the test, naming what never happened, once its time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.05


def wait_until(condition: Callable[[], T], what: str = "the condition",
               seconds: float = 60, every: float = POLL_SECONDS) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail the test
    with ``what`` after ``seconds``. A condition may assert itself (a process that exited
    when it should still run): that fails at once, as it should."""
    end = time.monotonic() + seconds
    while not (seen := condition()):
        assert time.monotonic() < end, f"{what} never happened within {seconds:g} s"
        time.sleep(every)
    return seen
