"""How long a person waits for ``window`` to answer: ``--help`` and ``status``, as typed.

Each command is the entry point a user runs (the ``window`` script that ``pip install``
puts next to the interpreter), started as a real subprocess and timed from spawn to exit. A
few warm-up runs fill the page cache and ``__pycache__`` first; the median of the timed runs
is kept. ``python -c pass`` with the same interpreter runs in the same loop: the floor no
Python program starts under, so a reader can tell the interpreter's share from window's.

Wall time moves with the load of a shared machine; each run's CPU time (user + system, from
``wait4``) moves much less, and is kept beside it. Where ``perf stat`` can count
instructions (not in most VMs), their median over a few runs is kept too. The project is
byte-compiled first, so no run pays for compiling a module.
"""

from __future__ import annotations

import compileall
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report

RUNS = 15
WARMUPS = 2
INSTRUCTION_RUNS = 3
COMMAND_TIMEOUT_S = 60
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timing:
    """Wall seconds of every timed run of one command."""

    label: str
    runs: tuple[float, ...]
    cpu_runs: tuple[float, ...] = ()
    instructions: int | None = None  # median over INSTRUCTION_RUNS, where perf counts them

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpu_runs) if self.cpu_runs else None

    @property
    def spread(self) -> str:
        return f"min {min(self.runs):.3f} s, max {max(self.runs):.3f} s"


@dataclass(frozen=True)
class Startup:
    floor: Timing
    help: Timing
    status: Timing
    entry_point: str
    load: str = ""  # the load average (1, 5, 15 min) as the timing began


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


def byte_compile() -> None:
    """Every module of the project compiled to ``__pycache__`` before anything is timed."""
    for package in ("orchestrator", "phases"):
        compileall.compile_dir(REPO / package, quiet=1)


def once(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and what it waited for)."""
    started = time.perf_counter()
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as child:
        # wait4 reaps the child with its resource usage; stderr is small (an error at most).
        _, status, usage = os.wait4(child.pid, 0)
        took = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr = child.stderr.read() if child.stderr else b""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}:"
                           f" {stderr.decode(errors='replace').strip()[-500:]}")
    return took, usage.ru_utime + usage.ru_stime


def instructions(argv: list[str], cwd: Path, env: dict[str, str]) -> int | None:
    """User-space instructions of one run as ``perf stat`` counts them; None where perf is
    missing or the machine does not expose the counter (most VMs)."""
    try:
        done = subprocess.run(["perf", "stat", "-x,", "-e", "instructions:u", *argv], cwd=cwd,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and \
                re.fullmatch(r"\d+", fields[0]):
            return int(fields[0])
    return None


def counted(argv: list[str], cwd: Path, env: dict[str, str]) -> int | None:
    found = [instructions(argv, cwd, env) for _ in range(INSTRUCTION_RUNS)]
    known = [n for n in found if n is not None]
    return int(statistics.median(known)) if len(known) == len(found) else None


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
    byte_compile()
    load = report.load()
    for _ in range(WARMUPS):
        for argv in commands.values():
            once(argv, cwd, env)
    timed: dict[str, list[float]] = {label: [] for label in commands}
    cpu: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            wall, used = once(argv, cwd, env)
            timed[label].append(wall)
            cpu[label].append(used)
    floor, help_, status = (Timing(label, tuple(timed[label]), tuple(cpu[label]),
                                   counted(argv, cwd, env))
                            for label, argv in commands.items())
    return Startup(floor, help_, status, entry_point=" ".join(map(shown, window)), load=load)


def shown(arg: str) -> str:
    """A path under the working directory as the reader would type it (``.venv/bin/window``)."""
    path = Path(arg)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else arg
