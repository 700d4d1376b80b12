"""What a window leaves behind: report.md and report.html in the state folder after every
run (and after an interruption), per-run copies, `window report` and `window history`; the
HTML report rendered by a real headless chromium."""

from __future__ import annotations

import signal
from pathlib import Path

from orchestrator.commands import demo
from orchestrator.reporting.as_html import BAR_COLOURS
from tests.support.browser import pixels_of, screenshot
from tests.support.shop import Shop, add_free_sample

SLEEPS_ON_PRODUCTION = ('if [ "$WINDOW_PHASE" = migrate ]; then'
                        " sleep 120 & echo $! > sleeper.pid; wait; fi")


def state(shop: Shop) -> Path:
    return shop.folder / ".window"


def run_completed_then_rolled_back(shop: Shop) -> tuple[str, str]:
    done = shop.run_window()
    assert done.returncode == 0, done.stdout + done.stderr
    first = shop.status()["run_id"]
    add_free_sample(shop.prod_url)  # only production trips
    shop.configure(demo.BAD_MIGRATION)
    done = shop.run_window()
    assert done.returncode == 1, done.stdout + done.stderr
    return first, shop.status()["run_id"]


def test_every_window_writes_its_report_and_history_lists_both(shop: Shop) -> None:
    completed, rolled_back = run_completed_then_rolled_back(shop)

    listed = shop.window("history")

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].startswith(rolled_back), "newest first"
    assert lines[2].startswith(completed)
    assert lines[1].split()[3:5] == ["rolled_back", "1"]
    assert lines[2].split()[3:5] == ["completed", "0"]
    assert "migrate" in lines[1] and "FAILED" in lines[1] and "rollback" in lines[1]
    assert "post_check" in lines[2] and "banner_off" in lines[2]
    report = (state(shop) / "report.md").read_text()
    assert report.startswith(f"# window shop-prod {rolled_back}: rolled_back")
    assert "| **exit code** | 1 (failed and rolled back" in report
    for phase in ("preflight", "staging_dry_run", "backup", "migrate", "rollback"):
        assert f"| {phase} |" in report
    assert "| migrate | failed |" in report
    assert shop.status()["backup"]["path"] in report
    assert "| **verified** | yes" in report
    assert "| staging_dry_run | orders-intact | sql | passed |" in report
    assert "| **method** | swap |" in report
    assert demo.APP_PASSWORD not in report
    first = (state(shop) / "reports" / f"{completed}.md").read_text()
    assert "| **final state** | completed |" in first
    assert "| post_check | orders-intact | sql | passed |" in first
    html = (state(shop) / "report.html").read_text()
    assert '<svg id="timeline"' in html
    assert demo.APP_PASSWORD not in html
    assert_report_rewrites_an_older_run_alone(shop, completed)


def assert_report_rewrites_an_older_run_alone(shop: Shop, older: str) -> None:
    """`window report RUN_ID` writes that run's copy; report.* stay the newest run's."""
    (state(shop) / "reports" / f"{older}.html").unlink()
    newest = (state(shop) / "report.html").read_text()

    done = shop.window("report", older, "--format", "html")

    assert done.returncode == 0, done.stderr
    again = state(shop) / "reports" / f"{older}.html"
    assert done.stdout.split() == [str(again)]
    assert f"{older}: completed" in again.read_text()
    assert (state(shop) / "report.html").read_text() == newest
    unknown = shop.window("report", "19990101_000000_beef")
    assert unknown.returncode == 2
    assert "window history" in unknown.stderr


def test_history_and_report_without_any_window_say_so(shop: Shop) -> None:
    for command in ("history", "report"):
        done = shop.window(command)

        assert done.returncode == 2
        assert "no window has run" in done.stderr
        assert "Traceback" not in done.stderr


def test_an_interrupted_window_writes_its_report_too(shop: Shop) -> None:
    shop.configure(migrate=SLEEPS_ON_PRODUCTION)
    window, _ = shop.start_until_sleeping()

    window.send_signal(signal.SIGINT)

    assert window.wait(timeout=60) == 5, shop.background_output()
    report = (state(shop) / "report.md").read_text()
    assert "| **final state** | migrate (interrupted: `window resume` continues) |" in report
    assert "| **exit code** | 5 (interrupted" in report
    assert "| migrate | interrupted |" in report
    assert "report_not_written" not in shop.background_output()


def test_report_html_renders_in_headless_chromium(shop: Shop, tmp_path: Path) -> None:
    done = shop.run_window()
    assert done.returncode == 0, done.stdout + done.stderr
    page = state(shop) / "report.html"
    png = tmp_path / "report.png"

    screenshot(page, png)

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    # Seven succeeded phases, each a bar of the timeline's own colour (used nowhere else but
    # its legend): more of it than the legend's swatch and seven of the narrowest bars.
    legend, narrowest = 18 * 10, 3 * 14
    assert pixels_of(png, BAR_COLOURS["succeeded"]) > legend + 7 * narrowest
