"""One error tree for everything a user can cause or a phase can report.

    WindowError                 exit code carried on the class
    ├── ConfigError             2  bad or missing configuration, nothing done
    ├── UsageError              2  a command that does not apply (nothing to resume)
    ├── GateRefused             3  a safety gate said no before anything ran
    │   └── Busy                6  another process or runner holds the window: nothing done
    ├── PhaseError              a phase did not succeed (the runner turns it into an event)
    │   ├── PhaseFailed
    │   └── PhaseTimeout
    ├── AbortRequested          the operator asked for a rollback while a phase ran
    └── Interrupted             5  SIGINT / SIGTERM: the journal says interrupted
        └── LeaseLost           6  another runner took the window over: this one stopped

The CLI catches ``WindowError`` once and maps it to its exit code; foreign errors
(psycopg, subprocess, OSError) are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class WindowError(Exception):
    """Base of every error the CLI turns into one sentence and an exit code."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(WindowError):
    exit_code = 2


class UsageError(WindowError):
    exit_code = 2


class GateRefused(WindowError):
    exit_code = 3


class Busy(GateRefused):
    """The window's state is held: a live process on this machine (the state folder's lock)
    or a live lease in the shared state. A fleet runner leaves such a target to its holder."""

    exit_code = 6


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
    exit_code = 5


class LeaseLost(Interrupted):
    """This process no longer holds the window's lease (it was taken over or broken): it
    stops acting at once and writes nothing more to the shared state."""

    exit_code = 6
