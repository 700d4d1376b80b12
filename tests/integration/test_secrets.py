"""No password from any URL in output, journal, audit log or status, even when the user's own
command prints the URL it was given."""

from __future__ import annotations

import urllib.parse

from orchestrator import demo
from tests.integration.conftest import Shop
from tests.integration.test_window import add_free_sample

LEAKY_MIGRATE = ('echo "connecting to $DATABASE_URL"; echo "PGPASSWORD-like: $DATABASE_URL" >&2; '
                 'psql -X -q -v ON_ERROR_STOP=1 -f migration.sql "$DATABASE_URL"')


def secrets_of(shop: Shop) -> set[str]:
    raw = {demo.APP_PASSWORD, shop.cluster.password}
    return raw | {urllib.parse.quote(s, safe="") for s in raw}


def test_no_password_anywhere_after_a_rollback(shop: Shop) -> None:
    add_free_sample(shop.prod_url)
    shop.configure(demo.BAD_MIGRATION, migrate=LEAKY_MIGRATE)
    done = shop.run_window()
    assert done.returncode == 1, done.stderr

    state = shop.folder / ".window"
    places = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "status": shop.window("status").stdout,
        "status --json": shop.window("status", "--json").stdout,
        "audit.jsonl": (state / "audit.jsonl").read_text(),
    }
    for path in state.glob("journal.sqlite*"):
        places[path.name] = path.read_bytes().decode("utf-8", "replace")

    for where, text in places.items():
        for secret in secrets_of(shop):
            assert secret not in text, f"a password leaked into {where}"
    journal = places["journal.sqlite"] + places.get("journal.sqlite-wal", "")
    assert "connecting to postgresql://shop_app:***@" in journal, "the output was not kept"
