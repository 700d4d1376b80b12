"""Hostile input against a real PostgreSQL: two windows started in the same instant on one
state folder (or one target), and a project whose every name, path and command output is
hostile (unicode, quotes, markup, escape sequences, bytes that are no UTF-8, a flood)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from orchestrator.commands import demo
from tests.support.shop import Shop
from tests.support.waiting import wait_until

# Each window waits on the barrier (a FIFO) and starts when it closes: both at once.
AT_THE_BARRIER = ['/bin/sh', '-c', 'read _ < "$0"; exec "$@"']


def started_together(projects: list[Path], env: dict[str, str], barrier: Path
                     ) -> list[subprocess.CompletedProcess[str]]:
    """``window run`` in each project, released in the same instant; their results."""
    if not barrier.exists():
        os.mkfifo(barrier)
    # Held open read-write, the FIFO lets each shell's open() return at once; closing it
    # then ends every shell's read in the same instant.
    gate = os.open(barrier, os.O_RDWR)
    logs = [barrier.parent / f"window{i}.log" for i in range(len(projects))]
    processes = []
    for project, log in zip(projects, logs, strict=True):
        with log.open("w") as out:
            processes.append(subprocess.Popen(
                [*AT_THE_BARRIER, str(barrier), sys.executable, "-m", "orchestrator", "run",
                 "--confirm", demo.PHRASE], cwd=project, env=env, text=True,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
    try:
        wait_until(lambda: all(_reading(p.pid, barrier) for p in processes),
                   "the windows reaching the barrier", seconds=30, every=0.01)
    finally:
        os.close(gate)
    for process in processes:
        process.wait(timeout=180)
    return [subprocess.CompletedProcess(p.args, p.returncode, log.read_text(), "")
            for p, log in zip(processes, logs, strict=True)]


def _reading(pid: int, barrier: Path) -> bool:
    """Whether the shell has the barrier open as its standard input (it then waits in read:
    the window has not started)."""
    try:
        return Path(f"/proc/{pid}/fd/0").readlink() == barrier
    except OSError:
        return False


def runs_in(project: Path) -> list[tuple[str, str]]:
    journal = sqlite3.connect(project / ".window" / "journal.sqlite")
    try:
        return journal.execute("SELECT run_id, state FROM runs ORDER BY run_id").fetchall()
    finally:
        journal.close()


def test_two_runs_in_the_same_instant_on_one_state_folder(shop: Shop) -> None:
    """Three times, two `window run` released together from one folder: one completes, the
    other exits 6 (busy) having done nothing; the journal gains exactly one run each time."""
    barrier = shop.folder.parent / "barrier"
    for round_ in range(1, 4):
        results = started_together([shop.folder, shop.folder], shop.env, barrier)

        codes = sorted(r.returncode for r in results)
        assert codes == [0, 6], "\n\n".join(r.stdout for r in results)
        busy = next(r for r in results if r.returncode == 6).stdout
        assert f"window: another window is running from {shop.folder / '.window'}" in busy
        assert "phase_started" not in busy and "window_started" not in busy
        runs = runs_in(shop.folder)
        assert len(runs) == round_, runs
        assert runs[-1][1] == "completed"
        assert shop.banner_log() == ["on", "off"] * round_


def test_two_runs_in_the_same_instant_on_one_target_from_two_folders(shop: Shop) -> None:
    """Two checkouts (two state folders) against the same production: the target's lock
    lets one through; the other exits 6 without a run in its journal."""
    other = shop.folder.parent / "other-checkout"
    demo.write_project(other, demo.GOOD_MIGRATION)

    results = started_together([shop.folder, other], shop.env, shop.folder.parent / "barrier")

    codes = [r.returncode for r in results]
    assert sorted(codes) == [0, 6], "\n\n".join(r.stdout for r in results)
    loser = [shop.folder, other][codes.index(6)]
    assert "window: another window holds 127.0.0.1:" in results[codes.index(6)].stdout
    journal = loser / ".window" / "journal.sqlite"
    assert not journal.exists() or runs_in(loser) == []


HOSTILE_NAME = 'shöp-prod 😀 "quoted" <b>bold</b> $(x) \\ ü'
# Output as tools write it on a bad night: a flood of lines, then colour codes, a bell,
# bytes that are no UTF-8, carriage returns and markup.
NOISY = ("seq 1 20000\nprintf '\\033[31mred\\033[0m \\007 \\377\\376 bytes\\r\\n"
         "<script>alert(1)</script>\\n'\n")
MIGRATE = 'sh noisy.sh; psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"'


def hostile_project(shop: Shop) -> Path:
    """The project with hostile names and noisy commands; its state folder."""
    config = shop.configure(
        migrate=MIGRATE, banner_on="sh noisy.sh; echo on >> banner.log",
        banner_off="sh noisy.sh; echo off >> banner.log", checks="""
[[checks]]
name = "chéck 😀 <script>x</script>"
kind = "command"
command = "printf 'ünïcødé\\\\377 ok\\\\n'"
expect_output = "ünïcødé"
""")
    (shop.folder / "noisy.sh").write_text(NOISY)
    text = config.read_text().replace(
        'name = "shop-prod"', f"name = {json.dumps(HOSTILE_NAME, ensure_ascii=False)}\n"
        'state_dir = "état .window ü/😀"', 1)
    config.write_text(text.replace('dir = "backups"', 'dir = "sauvegardes ü/ a b"', 1))
    return shop.folder / "état .window ü" / "😀"


def test_a_window_with_hostile_names_paths_and_output_completes(shop: Shop) -> None:
    """Unicode, quotes, markup and shell metacharacters in the window's name, state folder,
    backup folder and check name; commands that print escape codes, invalid UTF-8 and 20,000
    lines: the window completes, and status, history and the reports show it all escaped."""
    state = hostile_project(shop)

    done = shop.run_window()

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert shop.has_column("orders", "status")
    assert shop.banner_log() == ["on", "off"]
    status = shop.status()
    assert status["state"] == "completed"
    assert Path(status["backup"]["path"]).is_relative_to(shop.folder / "sauvegardes ü" / " a b")
    history = shop.window("history")
    assert history.returncode == 0 and "completed" in history.stdout, history.stderr
    page = (state / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert HOSTILE_NAME not in page  # its quotes and markup are escaped
    assert "chéck 😀 &lt;script&gt;x&lt;/script&gt;" in page
    assert "chéck 😀" in (state / "report.md").read_text()
    assert "<b>" not in shop.window("status").stdout.replace(HOSTILE_NAME, "")
    journal = sqlite3.connect(state / "journal.sqlite")
    with journal:
        kept = "".join(row[0] or "" for row in journal.execute("SELECT output FROM children"))
    assert "<script>alert(1)</script>" in kept and "19999\n20000" in kept, "output not kept"
