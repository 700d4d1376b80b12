"""How long a person waits for ``window`` to answer: ``--help`` and ``status``, as typed.

Each command is the entry point a user runs (the ``window`` script that ``pip install``
puts next to the interpreter), started as a real subprocess and timed from spawn to exit. A
few warm-up runs fill the page cache and ``__pycache__`` first; the median of the timed runs
is kept. ``python -c pass`` with the same interpreter runs in the same loop: the floor no
Python program starts under, so a reader can tell the interpreter's share from window's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RUNS = 15
WARMUPS = 2
COMMAND_TIMEOUT_S = 60


@dataclass(frozen=True)
class Timing:
    """Wall seconds of every timed run of one command."""

    label: str
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> str:
        return f"min {min(self.runs):.3f} s, max {max(self.runs):.3f} s"


@dataclass(frozen=True)
class Startup:
    floor: Timing
    help: Timing
    status: Timing
    entry_point: str


def entry_point() -> list[str]:
    """The ``window`` script beside this interpreter (what a user runs); ``python -m
    orchestrator`` only when it is not installed as a script."""
    script = Path(sys.executable).parent / "window"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator"]


def runs_wanted() -> int:
    value = os.environ.get("BENCH_STARTUP_RUNS", str(RUNS))
    if not value.isdigit() or int(value) < 10:
        sys.exit(f"bench: BENCH_STARTUP_RUNS must be an integer of at least 10, not {value!r}")
    return int(value)


def once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:"
                           f" {done.stderr.decode(errors='replace').strip()[-500:]}")
    return took


def measure(status_config: Path, env: dict[str, str], runs: int = RUNS) -> Startup:
    """Round-robin over the three commands, so a burst of load on a shared machine hits
    all of them alike rather than one."""
    window = entry_point()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "window --help": [*window, "--help"],
        "window status": [*window, "status", "--config", str(status_config)],
    }
    cwd = status_config.parent
    for _ in range(WARMUPS):
        for argv in commands.values():
            once(argv, cwd, env)
    timed: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            timed[label].append(once(argv, cwd, env))
    floor, help_, status = (Timing(label, tuple(timed[label])) for label in commands)
    return Startup(floor, help_, status, entry_point=" ".join(map(shown, window)))


def shown(arg: str) -> str:
    """A path under the working directory as the reader would type it (``.venv/bin/window``)."""
    path = Path(arg)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else arg
