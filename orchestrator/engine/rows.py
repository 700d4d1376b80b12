"""What the journal hands back: a run, a phase's row and its status, a child process.

Plain frozen records: reading them (``window status``, the reports, the fleet) needs no
journal, no database driver, no machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Run:
    run_id: str
    created_at: float
    state: str
    interrupted: bool
    pid: int | None
    pid_start: str | None
    user: str | None
    host: str | None
    git_commit: str | None
    target: str | None
    staging: str | None
    abort_requested_at: float | None
    exit_code: int | None
    finished_at: float | None
    backup_when: str


class PhaseStatus(StrEnum):
    """A phase's status in the journal, as ``window status --json`` reports it."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"  # stopped by the operator (`window abort`), not by a failure
    SKIPPED = "skipped"


@dataclass(frozen=True)
class PhaseRow:
    name: str
    status: PhaseStatus
    started_at: float | None
    finished_at: float | None
    deadline: float | None
    timeout_s: float | None
    attempts: int
    error: str | None


@dataclass(frozen=True)
class Child:
    id: int
    phase: str
    label: str
    pid: int
    pgid: int
    start_ticks: str | None
