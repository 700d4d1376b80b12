"""Run one command the way a window must: own process group, hard deadline, journaled pid.

Each child starts a new session (so its process group is its own and a terminal's Ctrl-C
reaches only the window); its pid, group and kernel start time go into the journal before we
wait on it, so a later ``resume`` or ``abort`` can find it if the window process dies. Past the
deadline, or on abort or interrupt, the whole group is terminated, then killed.

The child's exit wakes the window at once: it waits on the child's pidfd (Linux 5.3+), which
becomes readable when the child exits, for at most ``POLL_SECONDS`` between two looks at
``hooks.poll``; where there is no pidfd, ``Popen.wait`` polls instead (up to 50 ms late).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import crash
from orchestrator.errors import PhaseFailed, PhaseTimeout

if TYPE_CHECKING:
    from orchestrator.config import Command

OUTPUT_LIMIT = 128 * 1024  # kept per stream; the journal keeps less, after redaction
POLL_SECONDS = 0.1
GRACE_SECONDS = 3.0
TAIL_LINES = 8  # of a failed command's output, in its one-sentence error


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Hooks:
    """What the caller learns and decides while a child runs."""

    started: Callable[[int, int, str | None], int] = lambda _pid, _pgid, _ticks: 0
    ended: Callable[[int, int | None, str], None] = lambda _id, _code, _out: None
    poll: Callable[[], None] = lambda: None  # raises to stop the child (abort, interrupt)
    line: Callable[[str], None] | None = None  # each line of stderr as it arrives


def argv(command: Command) -> list[str]:
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def describe(command: Command) -> str:
    return command if isinstance(command, str) else " ".join(command)


def start_ticks(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat): tells reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def run(command: Command, *, env: Mapping[str, str], cwd: Path, deadline: float,
        hooks: Hooks = Hooks(), label: str = "", stdout_to: Path | None = None) -> Result:
    """Run to completion, or raise PhaseTimeout / whatever ``hooks.poll`` raises.

    Only the last ``OUTPUT_LIMIT`` bytes of each stream are kept, for people to read. Output
    that is parsed must be read whole: with ``stdout_to``, the child writes its standard
    output to that file (the result's ``stdout`` is then the file's tail)."""
    try:
        with contextlib.ExitStack() as files:
            out = files.enter_context(stdout_to.open("wb")) if stdout_to else subprocess.PIPE
            child = subprocess.Popen(
                argv(command), cwd=cwd, env=dict(env), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
            )
    except OSError as exc:
        raise PhaseFailed(f"cannot start `{label or describe(command)}` in {cwd}:"
                          f" {exc.strerror or exc}") from exc
    child_id = hooks.started(child.pid, child.pid, start_ticks(child.pid))
    stdout = _Collector(child.stdout) if stdout_to is None else _FileTail(stdout_to)
    stderr = _Collector(child.stderr, hooks.line)
    try:
        _wait(child, deadline, hooks.poll, label or describe(command))
    except BaseException:
        stop_group(child.pid, leader=child)
        with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable: do not hang on it
            child.wait(timeout=GRACE_SECONDS)
        hooks.ended(child_id, child.returncode, stdout.text() + stderr.text())
        raise
    result = Result(child.returncode, stdout.text(), stderr.text())
    crash.point(f"process.exited.{Path(argv(command)[0]).name}")  # done, not yet journaled
    hooks.ended(child_id, result.exit_code, result.output)
    return result


def _wait(child: subprocess.Popen[bytes], deadline: float, poll: Callable[[], None],
          label: str) -> None:
    with ExitWatch(child) as watch:
        while child.poll() is None:
            poll()
            left = deadline - time.time()
            if left <= 0:
                raise PhaseTimeout(f"`{label}` was still running at its deadline and was"
                                   " killed.")
            watch.wait(min(POLL_SECONDS, left))


class ExitWatch:
    """Waits for a child's exit: on its pidfd where the kernel has them, so the wait ends the
    moment the child exits; else through ``Popen.wait``'s own polling."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self._child = child
        self.pidfd: int | None = None
        self._poller: select.poll | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd_open, or an old kernel
            self.pidfd = os.pidfd_open(child.pid)
            self._poller = select.poll()
            self._poller.register(self.pidfd, select.POLLIN)

    def wait(self, seconds: float) -> None:
        """Until the child exits or ``seconds`` pass; the caller asks ``poll()`` which."""
        if self._poller is not None:
            self._poller.poll(max(1, math.ceil(seconds * 1000)))
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._child.wait(timeout=seconds)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd, self._poller = None, None

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def stop_group(pgid: int, grace: float = GRACE_SECONDS,
               leader: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the group, give it ``grace`` seconds, then SIGKILL what is left. ``leader``, our
    own child that leads the group, is reaped as it exits: unreaped, it would keep the group
    alive to the end of the grace."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if leader is not None:
            leader.poll()
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.01 if leader is not None else POLL_SECONDS)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


class _Collector:
    """Reads one pipe on a thread so a chatty child can never block on a full pipe."""

    def __init__(self, pipe: object, line: Callable[[str], None] | None = None) -> None:
        self._line = line
        self._partial = b""
        self._chunks: list[bytes] = []
        self._size = 0
        self._cut = False
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        read = pipe.read1  # type: ignore[attr-defined]
        while chunk := read(65536):
            if self._line is not None:
                *lines, self._partial = (self._partial + chunk).split(b"\n")
                for line in lines:
                    self._line(line.decode("utf-8", "replace"))
            self._chunks.append(chunk)
            self._size += len(chunk)
            while self._size > OUTPUT_LIMIT and len(self._chunks) > 1:
                self._size -= len(self._chunks.pop(0))
                self._cut = True
        pipe.close()  # type: ignore[attr-defined]  # at its end: a caller in-process leaks none

    def text(self) -> str:
        # A grandchild that kept the pipe open must not hold the window: wait briefly only.
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():  # read to its end: closed (else its reader owns it)
            self._pipe.close()  # type: ignore[attr-defined]
        return _shown(b"".join(self._chunks), cut=self._cut)


class _FileTail:
    """The last ``OUTPUT_LIMIT`` bytes of a file a child wrote its output to."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def text(self) -> str:
        try:
            with self._path.open("rb") as stream:
                size = stream.seek(0, os.SEEK_END)
                stream.seek(max(0, size - OUTPUT_LIMIT))
                return _shown(stream.read(), cut=size > OUTPUT_LIMIT)
        except OSError:
            return ""


def _shown(data: bytes, *, cut: bool) -> str:
    text = data.decode("utf-8", "replace")
    # A cut can fall inside a URL, where redaction would no longer recognise it.
    return text.split("\n", 1)[-1] if cut else text


def tail(output: str, lines: int = TAIL_LINES) -> str:
    """The last non-blank lines of a command's output, on one line."""
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"
