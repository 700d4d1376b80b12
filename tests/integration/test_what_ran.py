"""What ran is named: the migrations the rehearsal and production's migration applied (from the
tool's table before and after), in the output, ``window status --json`` and the report; the
migrate command's output tail (redacted) in the status and the report."""

from __future__ import annotations

from tests.support.prisma import MIGRATION, prisma_project
from tests.support.shop import Shop


def test_the_migrations_applied_are_named_everywhere(shop: Shop) -> None:
    prisma_project(shop, migrate="./fake-prisma.sh && echo applied with $DATABASE_URL")

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"migrations applied: {MIGRATION}" in done.stdout
    status = shop.status()
    assert status["rehearsal"]["applied"] == [MIGRATION]
    assert status["migration"]["applied"] == [MIGRATION]
    output = status["migration"]["output"]
    assert "applied with postgresql://" in output
    assert shop.cluster.password not in output and "Sh0p" not in output, "redacted"
    report = next((shop.folder / ".window" / "reports").glob("*.md")).read_text()
    assert "## Migration" in report and MIGRATION in report


def test_without_a_tool_nothing_claims_what_was_applied(shop: Shop) -> None:
    shop.configure()

    done = shop.run_window()

    assert done.returncode == 0, done.stdout + done.stderr
    assert shop.status()["migration"]["applied"] is None
    assert "rehearsal_unproven" in done.stderr
    assert "migrations applied" not in done.stdout
