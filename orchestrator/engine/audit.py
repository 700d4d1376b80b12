"""The audit context of every command that acts: who, where, what, refusals included.

Each command (a window's ``run``, ``resume``, ``abort``, a fleet's, ``prune``, ``unlock``)
opens the state folder's ``audit.jsonl`` and binds who and where for every event it logs;
with the S3 state backend the log is shelved beside the shared journal when it ends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from orchestrator import log
from orchestrator.config import Settings
from orchestrator.engine import gates
from orchestrator.engine.identity import who
from orchestrator.errors import ConfigError, GateRefused, Interrupted, UsageError
from orchestrator.store import blobs


@contextmanager
def audited(settings: Settings, command: str) -> Iterator[None]:
    """Every event ``command`` logs lands in the audit log with who and where; a refusal or
    an interruption is logged before it propagates."""
    try:
        log.audit.open(settings.state_dir / "audit.jsonl")
    except OSError as exc:
        raise ConfigError(f"the state folder {settings.state_dir} cannot be written"
                          f" ({exc.strerror or exc}); set [window] state_dir.") from exc
    try:
        with structlog.contextvars.bound_contextvars(
            cli_command=command, user=who(), host=socket.gethostname(),
            git_commit=gates.git("rev-parse", "HEAD"),
        ):
            try:
                yield
            except Interrupted as exc:
                structlog.get_logger().warning("command_interrupted", reason=exc.message,
                                               exit_code=exc.exit_code)
                raise
            except (GateRefused, UsageError, ConfigError) as exc:
                structlog.get_logger().warning("command_refused", reason=exc.message,
                                               exit_code=exc.exit_code)
                raise
    finally:
        log.audit.close()
        blobs.shelve_audit(settings)
