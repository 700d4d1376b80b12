"""What a phase gets: settings, the run's journal, its databases, its deadline, and the one
way to run a command (journaled, in its own process group, bounded by the deadline)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from orchestrator.config import Command, Settings
from orchestrator.engine import proc
from orchestrator.engine.journal import Journal
from orchestrator.errors import AbortRequested
from orchestrator.log import Logger
from orchestrator.log import get as get_logger
from orchestrator.postgres import pg


def _never() -> None:
    return None


@dataclass(frozen=True)
class Context:
    settings: Settings
    journal: Journal
    run_id: str
    target: pg.Db
    staging: pg.Db
    phase: str = ""
    deadline: float = 0.0
    poll: Callable[[], None] = field(default=_never)
    log: Logger = field(default_factory=get_logger)
    # This process asked the servers whether staging is production moments before (the
    # gate of `window run`): preflight need not ask again. A resume always asks.
    distinct_checked: bool = False

    def for_phase(self, phase: str, deadline: float, poll: Callable[[], None]) -> Context:
        return replace(self, phase=phase, deadline=deadline, poll=poll,
                       log=get_logger().bind(phase=phase))

    def shielded(self, seconds: float) -> Context:
        """A copy for undoing what the phase did: a fresh deadline, deaf to abort requests
        (signals still stop it)."""
        poll = self.poll

        def signals_only() -> None:
            with contextlib.suppress(AbortRequested):
                poll()

        return replace(self, deadline=time.time() + seconds, poll=signals_only)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    @property
    def app_name(self) -> str:
        """The ``application_name`` of every session a command of this phase opens."""
        return f"window/{self.run_id}/{self.phase}"

    def command_env(self, db: pg.Db) -> dict[str, str]:
        env = {**os.environ}
        if str(db) != str(self.target):
            # A command aimed at another database must not find production elsewhere in its
            # environment: Prisma's directUrl (DIRECT_URL) would migrate production itself.
            for name in [n for n, value in env.items() if self.target.named_by(value)]:
                if name != self.settings.target.url_env:  # that one is expected there
                    self.log.warning("production_url_hidden", variable=name,
                                     database=str(db))
                env[name] = db.url
        return {
            **env,
            "DATABASE_URL": db.url,
            "WINDOW_PHASE": self.phase,
            "WINDOW_RUN_ID": self.run_id,
            "PGAPPNAME": self.app_name,
        }

    def run_command(self, command: Command, *, db: pg.Db, cwd: Path | None = None,
                    deadline: float | None = None, env: dict[str, str] | None = None,
                    label: str | None = None,
                    progress: Callable[[str], None] | None = None,
                    stdout_to: Path | None = None) -> proc.Result:
        """Run a user's or a tool's command, journaled so a later process can find it; with
        ``stdout_to``, its whole standard output is in that file (see ``proc.run``)."""
        text = label or proc.describe(command)
        hooks = proc.Hooks(
            started=lambda pid, pgid, ticks: self.journal.child_started(
                self.run_id, self.phase, text, pid=pid, pgid=pgid, start_ticks=ticks),
            ended=self.journal.child_ended,
            poll=self.poll,
            line=progress,
        )
        self.log.info("command_started", command=text)
        started = time.monotonic()
        try:
            result = proc.run(command, env=env or self.command_env(db),
                              cwd=cwd or self.settings.config_dir,
                              deadline=min(deadline or self.deadline, self.deadline),
                              hooks=hooks, label=text, stdout_to=stdout_to)
        except BaseException:
            self.log.warning("command_stopped", command=text,
                             duration_s=round(time.monotonic() - started, 3))
            self.end_sessions(db)
            raise
        self.log.info("command_finished", command=text, exit_code=result.exit_code,
                      duration_s=round(time.monotonic() - started, 3))
        return result

    def end_sessions(self, db: pg.Db) -> None:
        """After a killed command, end its server sessions too: a killed client's query
        (and its locks) would otherwise run on."""
        try:
            with self.maintenance(db, deadline=time.time() + 10) as conn:
                ended = pg.terminate_sessions(conn, application_name=self.app_name)
        except Exception as exc:  # best effort: the kill already happened
            self.log.warning("sessions_not_ended", error=str(exc))
            return
        if ended:
            self.log.info("sessions_ended", count=ended)

    def connect(self, db: pg.Db, *, deadline: float | None = None,
                autocommit: bool = True) -> psycopg.Connection[Any]:
        return pg.connect(db, deadline or self.deadline, autocommit=autocommit, poll=self.poll)

    def maintenance(self, db: pg.Db, *, deadline: float | None = None
                    ) -> psycopg.Connection[Any]:
        """A connection to the server's maintenance database, for work on ``db`` itself."""
        return self.connect(db.on(self.settings.target.maintenance_db), deadline=deadline)
