"""The Celery engine of a fleet: ``[engine] kind = "celery"`` in fleet.toml.

``window fleet run`` sends each target's window to the broker as the task
``window.target_window`` (fleet run id, target name, skip-staging), the canary first, then the
waves, ``concurrency`` tasks at a time, and follows them, holding the fleet's lock as the
built-in runner does: it alone writes the fleet's record.
``window fleet worker`` is a Celery worker whose task runs the target's window exactly as the
built-in runner's child does, ``window run --target NAME --fleet-run ID`` in a subprocess.

Exactly once comes from the target's journal, lock and lease, whatever the broker does: a
task delivered twice (a worker died: late acknowledgement delivers it again; or two
submissions of one fleet run, a submitter resumed after it died) starts ``window run
--fleet-run ID``, which resumes the target's window from its journal, or tells its outcome if
it ended. A window held by a live process (its lock or lease: the child exits 6) makes the
task wait (a retry with a countdown), never run beside it.

Brokers drop a task that stays unacknowledged too long: Redis gives it to another worker after
``visibility_timeout``; RabbitMQ closes the channel after ``consumer_timeout``. A window is
bounded by its phases' deadlines, so both are set above their sum (plus an hour): Redis's
``visibility_timeout`` in the transport options, RabbitMQ's per queue (``x-consumer-timeout``
queue argument, RabbitMQ 3.12 and later; older servers need ``consumer_timeout`` raised in
rabbitmq.conf). Were a task delivered again anyway, the lock makes the copy wait.

Celery is imported here only: ``window --help`` and the built-in runner never load it.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import structlog
from celery import Celery
from celery.result import AsyncResult
from kombu.entity import Queue
from kombu.exceptions import OperationalError

from orchestrator.engine.holding import Hold
from orchestrator.errors import ConfigError, ExitCode, GateRefused, WindowError
from orchestrator.fleet.record import Record, held, read_record, read_view
from orchestrator.fleet.runner import (
    BUSY_PAUSE_SECONDS,
    MAX_RESTARTS,
    ChildWindows,
    FleetRunner,
    child_env,
    output_file,
    window_argv,
)
from orchestrator.fleet.spec import Fleet, Target, broker_url, max_window_seconds, targets
from orchestrator.redact import redact
from orchestrator.store import blobs

TASK = "window.target_window"
TAIL_LINES = 40  # a finished task brings back its window's last lines for the submitter
MARGIN_SECONDS = 3600.0
RESEND_AFTER = 15.0  # an unfinished window no process holds this long is sent again


def ack_timeout(fleet: Fleet) -> float:
    """How long a task may stay unacknowledged: above the longest window."""
    return fleet.spec.engine.visibility_timeout or \
        max_window_seconds(fleet.settings) + MARGIN_SECONDS


def make_app(fleet: Fleet) -> Celery:
    """The Celery app of this fleet: its broker, its queue and the settings that make a task
    delivered again when its worker dies."""
    url = broker_url(fleet)
    engine = fleet.spec.engine
    redis = url.lower().startswith("redis")
    timeout = ack_timeout(fleet)
    app = Celery("window", broker=url, backend=url if redis else "rpc://",
                 set_as_current=False)
    transport = {"visibility_timeout": round(timeout)} if redis else {}
    arguments = None if redis else {"x-consumer-timeout": round(timeout * 1000)}
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=engine.queue,
        task_queues=[Queue(engine.queue, routing_key=engine.queue,  # type: ignore[no-untyped-call]
                           queue_arguments=arguments)],
        broker_transport_options=transport, result_backend_transport_options=transport,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_expires=max(86400, round(timeout)), task_track_started=True,
        worker_send_task_events=True, task_send_sent_event=True,  # Flower sees them
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
        worker_pool="threads",  # a task only waits on its window's process
    )
    app.task(name=TASK, bind=True, max_retries=None, shared=False)(_task_for(fleet))
    return app


def check_broker(fleet: Fleet) -> None:
    """Refuse before the fleet run is recorded when the broker cannot be reached."""
    app = make_app(fleet)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=1, timeout=10)
    except OperationalError as exc:
        raise GateRefused(redact(f"{fleet.path}: the Celery broker"
                                 f" ({fleet.spec.engine.broker_env}) cannot be reached: {exc};"
                                 " nothing was started.")) from exc
    finally:
        app.close()


# the worker ---------------------------------------------------------------------------------


def _task_for(fleet: Fleet) -> Any:
    def target_window(task: Any, fleet_run: str, name: str, skip_staging: bool,
                      restarts: int = 0) -> dict[str, Any]:
        try:
            return run_target(task, fleet, fleet_run, name, skip_staging=skip_staging,
                              restarts=restarts)
        except WindowError as exc:  # a variable missing on this machine, the state unreachable
            return {"exit_code": int(exc.exit_code), "why": redact(exc.message), "lines": []}

    return target_window


def run_target(task: Any, fleet: Fleet, fleet_run: str, name: str, *,
               skip_staging: bool, restarts: int = 0) -> dict[str, Any]:
    """One delivery of a target's task: its window run (or resumed) here, unless the fleet
    run moved on, the window ended, or a live process holds it (then: again later)."""
    settings, log = fleet.settings, structlog.get_logger().bind(fleet_run=fleet_run, target=name)
    record = read_record(blobs.store_for(settings))
    if record is None or record.id != fleet_run:
        return {"exit_code": int(ExitCode.USAGE), "lines": [],
                "why": f"the worker {task.request.hostname} does not see fleet run {fleet_run}"
                       " in its state: workers need the submitter's state (the same folder,"
                       ' or [state] backend = "s3")'}
    view = read_view(settings, record, name)
    if view.finished:
        return _skipped(f"its window already ended {view.state}", view.exit_code)
    if record.ended == "aborted" or (record.ended and not view.started):
        return _skipped(f"the fleet run {record.ended}")
    found = {t.name: t for t in targets(fleet)}
    if name not in found:
        return {"exit_code": int(ExitCode.USAGE), "lines": [],
                "why": f"target {name!r} is not listed in {fleet.path} on this worker"}
    code, lines = _window(fleet, record, found[name], skip_staging=skip_staging)
    if code == ExitCode.BUSY:  # another process holds it: wait, never beside it
        log.info("fleet_target_held", countdown=BUSY_PAUSE_SECONDS)
        raise task.retry(countdown=BUSY_PAUSE_SECONDS)
    view = read_view(settings, record, name)
    if view.started and not view.finished and restarts < MAX_RESTARTS:
        log.warning("fleet_target_unfinished", exit_code=code)  # killed: resumed again
        raise task.retry(countdown=BUSY_PAUSE_SECONDS, kwargs={"restarts": restarts + 1})
    return {"exit_code": code, "lines": lines, "worker": task.request.hostname}


def _skipped(why: str, code: int | None = None) -> dict[str, Any]:
    return {"exit_code": code, "skipped": why, "lines": []}


def _window(fleet: Fleet, record: Record, target: Target, *, skip_staging: bool
            ) -> tuple[int, list[str]]:
    """The child window, as the built-in runner starts it; its exit code and last lines."""
    settings = fleet.settings
    argv = window_argv(fleet, "run", target.name, "--fleet-run", record.id,
                       "--confirm", settings.window.confirm_phrase)
    output = output_file(settings, record, target.name)
    offset = output.stat().st_size if output.exists() else 0
    children = ChildWindows()
    children.start(target.name, argv + (["--skip-staging"] if skip_staging else []),
                   child_env(settings, record, target), output)
    [(_, code, _)] = list(children.ended(wait=True))
    return code, _tail(output, offset)


def _tail(output: Path, offset: int) -> list[str]:
    with output.open("rb") as source:
        source.seek(offset)
        lines = deque(source, maxlen=TAIL_LINES)
    return [redact(line.decode(errors="replace").rstrip("\r\n")) for line in lines]


def work(fleet: Fleet, concurrency: int, hostname: str | None = None) -> int:
    """``window fleet worker``: a Celery worker on this fleet's queue, until stopped."""
    app = make_app(fleet)
    name = hostname or f"window{os.getpid()}@{socket.gethostname()}"
    worker = app.Worker(concurrency=concurrency, hostname=name, loglevel="INFO",
                        queues=[fleet.spec.engine.queue], quiet=True, optimization="fair",
                        without_gossip=True, without_mingle=True)
    worker.start()
    return int(worker.exitcode or 0)


# the submitter ------------------------------------------------------------------------------


def _long(since: dict[str, float], name: str) -> bool:
    """Called while no live process holds ``name``'s window: whether none has for
    ``RESEND_AFTER`` since the first such call (then the count starts again)."""
    first = since.setdefault(name, time.monotonic())
    if time.monotonic() - first < RESEND_AFTER:
        return False
    del since[name]
    return True


class CeleryRunner(FleetRunner):
    """The fleet run sent to Celery workers: the waves as FleetRunner decides them, each
    target's window a task; the record written here only."""

    def __init__(self, fleet: Fleet, record: Record, found: list[Target],
                 out: TextIO | None = None, *, hold: Hold | None = None) -> None:
        super().__init__(fleet, record, found, fleet.settings.window.confirm_phrase, out,
                         hold=hold)
        self.app = make_app(fleet)
        self.sent: dict[str, AsyncResult[Any]] = {}
        self.answered: set[str] = set()
        self.quiet: set[str] = set()  # answered without a window of theirs: nothing to settle
        self.unheld_since: dict[str, float] = {}  # unfinished, held by no live process
        self.ended_unheld_since: dict[str, float] = {}  # ended, unanswered, held by none

    def _claim(self, name: str) -> None:
        if name in self.sent and not self._orphaned(name):
            return
        if name not in self.targets:
            raise ConfigError(f"{self.fleet.path}: target {name!r} of fleet run"
                              f" {self.record.id} is no longer listed.")
        try:
            result = self.app.send_task(TASK, args=[self.record.id, name,
                                                    self.record.skip_staging],
                                        queue=self.fleet.spec.engine.queue)
        except OperationalError as exc:
            raise GateRefused(redact(f"the Celery broker ({self.fleet.spec.engine.broker_env})"
                                     f" cannot be reached: {exc}")) from exc
        self.sent[name] = result
        self.children.say(f"[{name}] sent to the broker: task {TASK} {result.id}")
        self.log.info("fleet_target_sent", target=name, task=result.id)

    def _orphaned(self, name: str) -> bool:
        """A target sent, started and unfinished, that no live process has held for
        ``RESEND_AFTER``: its worker died and the broker keeps the task (Redis does until
        its visibility timeout). Sent again; a copy that finds the window held waits."""
        if name in self.answered or held(self.settings.for_target(name)):
            self.unheld_since.pop(name, None)
            return False
        view = read_view(self.settings, self.record, name)
        if not view.started or view.finished or not _long(self.unheld_since, name):
            return False
        self.log.warning("fleet_target_orphaned", target=name, resend_after_s=RESEND_AFTER)
        return True

    def _unanswered(self, name: str) -> bool:
        """A target whose window ended, its task unanswered, that no live process has held
        for ``RESEND_AFTER``: its worker died under the window, which went on in its own
        session to its end. No worker would answer for hours (Redis delivers the task again
        only after its visibility timeout): the window's journal tells its outcome."""
        if name not in self.finished:  # unfinished: `_orphaned` looks after it
            return False
        if held(self.settings.for_target(name)):
            self.ended_unheld_since.pop(name, None)
            return False
        if not _long(self.ended_unheld_since, name):
            return False
        self.log.warning("fleet_target_unanswered", target=name, after_s=RESEND_AFTER)
        return True

    def _ended(self) -> Any:
        for name, result in list(self.sent.items()):
            if name in self.answered:
                continue
            try:
                ready = result.ready()
            except OperationalError as exc:
                raise GateRefused(redact(f"the Celery broker cannot be reached: {exc}")) from exc
            if ready:
                self.answered.add(name)
                yield name, *self._answer(name, result)
            elif self._unanswered(name):  # its worker died: the window's journal answers
                self.answered.add(name)
                code = self.finished[name].exit_code
                yield name, int(ExitCode.FAILED) if code is None else code, ""

    def _answer(self, name: str, result: AsyncResult[Any]) -> tuple[int, str]:
        if result.failed():
            why = redact(f"{type(result.result).__name__}: {result.result}")
            self.children.say(f"[{name}] task failed: {why}")
            return int(ExitCode.FAILED), why
        value: dict[str, Any] = result.result
        for line in value.get("lines", []):
            self.children.say(f"[{name}] {line}")
        if value.get("skipped"):
            self.children.say(f"[{name}] not run by the worker: {value['skipped']}")
            self.quiet.add(name)
        code = value.get("exit_code")
        return (int(ExitCode.REFUSED) if code is None else int(code)), \
            str(value.get("why") or value.get("skipped") or (value.get("lines") or [""])[-1])

    def _settle(self, name: str, code: int, last_line: str) -> None:
        view = read_view(self.settings, self.record, name)
        if name in self.quiet:
            return
        if view.finished:
            self.log.info("fleet_target_ended", target=name, state=view.state,
                          exit_code=view.exit_code)
        elif not view.started:
            self._record_outcome(name, code, f"`window run` exited {code} without a window"
                                 + (f": {last_line}" if last_line else ""))
        else:  # the workers gave up on it: it stops the fleet
            self._record_outcome(name, code, f"its window stopped unfinished {MAX_RESTARTS + 1}"
                                 f" times (last exit {code}): `window status --target {name}`")

    def _in_flight(self) -> bool:
        return not self.signals and any(n not in self.answered for n in self.sent)

    def drive(self) -> int:
        try:
            return super().drive()
        finally:
            self.app.close()
