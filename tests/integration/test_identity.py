"""Staging is never production: a staging URL that reaches production's database under
another name (``localhost``, a Unix socket, a second listen address) is refused by ``plan``,
``run`` and ``rehearse`` before anything touches production, as the servers say, whatever the
URLs' text. The shop's role is not a superuser: the probe needs no privilege."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest

from orchestrator.commands import demo
from orchestrator.postgres.cluster import SECOND_ADDRESS
from tests.support.shop import Shop


def on_localhost(shop: Shop) -> str:
    return shop.prod_url.replace("@127.0.0.1:", "@localhost:")


def on_second_address(shop: Shop) -> str:
    return shop.prod_url.replace("@127.0.0.1:", f"@{SECOND_ADDRESS}:")


def on_unix_socket(shop: Shop) -> str:
    socket_dir = quote(str(shop.cluster.root), safe="")
    return (f"postgresql://{demo.APP_USER}@/{shop.prod_db}?host={socket_dir}"
            f"&port={shop.cluster.port}")


ALIASES: dict[str, Callable[[Shop], str]] = {
    "localhost": on_localhost, "unix socket": on_unix_socket,
    "second address": on_second_address,
}
COMMANDS = {"plan": ("plan",), "run": ("run", "--confirm", demo.PHRASE),
            "rehearse": ("rehearse",)}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("alias", ALIASES)
def test_staging_that_reaches_production_under_another_name_is_refused(
        shop: Shop, alias: str, command: str) -> None:
    shop.configure()
    before, schema = shop.fingerprint(), shop.schema()
    shop.env["DATABASE_URL_STAGING"] = ALIASES[alias](shop)

    done = shop.window(*COMMANDS[command])

    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "reaches production" in done.stderr and shop.prod_db in done.stderr, said
    assert shop.fingerprint() == before and shop.schema() == schema
    assert shop.banner_log() == []
    assert demo.APP_PASSWORD not in said
    if command == "run":
        assert not (shop.folder / "backups").exists() or not any(
            (shop.folder / "backups").iterdir()), "no backup was even started"


def test_a_staging_database_beside_production_is_not_production(shop: Shop) -> None:
    """Same server, same role, another database: the probe tells them apart."""
    shop.configure()
    shop.env["DATABASE_URL_STAGING"] = on_localhost(shop).replace(
        f"/{shop.prod_db}", f"/{shop.staging_db}")

    done = shop.window("plan")

    assert done.returncode == 0, done.stdout + done.stderr
