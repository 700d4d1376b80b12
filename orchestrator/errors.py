"""One error tree for everything a user can cause or a phase can report, and the exit codes
every command ends with.

    WindowError                 exit code carried on the class
    ├── ConfigError             2  bad or missing configuration, nothing done
    ├── UsageError              2  a command that does not apply (nothing to resume)
    ├── GateRefused             3  a safety gate said no before anything ran
    │   └── Busy                6  another process or runner holds the window: nothing done
    ├── PhaseError              2  a phase did not succeed (the runner turns ``event`` into
    │   │                          a transition; raised outside the runner: nothing was done)
    │   ├── PhaseFailed            event "failed"
    │   ├── PhaseTimeout           event "timed_out"
    │   └── AbortRequested         event "abort": the operator asked for a rollback
    └── Interrupted             5  SIGINT / SIGTERM: the journal says interrupted
        └── LeaseLost           6  another runner took the window over: this one stopped

The CLI catches ``WindowError`` once and maps it to its exit code; foreign errors
(psycopg, subprocess, OSError) are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """DESIGN.md's exit codes, the same for ``run``, ``resume``, ``abort`` and every other
    command: decided only through this enum, never as a bare number."""

    COMPLETED = 0        # done; for abort: rolled back, or nothing to roll back
    FAILED = 1           # failed; a window: and rolled back, production holds the backup
    USAGE = 2            # usage or configuration error: nothing was done
    REFUSED = 3          # refused or stopped before production changed
    NEEDS_ATTENTION = 4  # a rollback or the banner's removal failed: a person must act
    INTERRUPTED = 5      # a signal; `window resume` continues
    BUSY = 6             # another process or runner holds the window, or took it over


class WindowError(Exception):
    """Base of every error the CLI turns into one sentence and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(WindowError):
    exit_code: ExitCode = ExitCode.USAGE


class UsageError(WindowError):
    exit_code: ExitCode = ExitCode.USAGE


class GateRefused(WindowError):
    exit_code: ExitCode = ExitCode.REFUSED


class Busy(GateRefused):
    """The window's state is held: a live process on this machine (the state folder's lock)
    or a live lease in the shared state. A fleet runner leaves such a target to its holder."""

    exit_code: ExitCode = ExitCode.BUSY


class PhaseError(WindowError):
    """A phase ended without success; ``event`` is the machine trigger it maps to."""

    event = "failed"

    def __init__(self, message: str, *, phase: str = "") -> None:
        super().__init__(message)
        self.phase = phase


class PhaseFailed(PhaseError):
    event = "failed"


class PhaseTimeout(PhaseError):
    event = "timed_out"


class AbortRequested(PhaseError):
    event = "abort"


class Interrupted(WindowError):
    exit_code: ExitCode = ExitCode.INTERRUPTED


class LeaseLost(Interrupted):
    """This process no longer holds the window's lease (it was taken over or broken): it
    stops acting at once and writes nothing more to the shared state."""

    exit_code: ExitCode = ExitCode.BUSY
