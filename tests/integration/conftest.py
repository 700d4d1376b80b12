"""A private PostgreSQL cluster for the session, and a fresh shop (production + staging +
a git checkout with window.toml) for each test. Every window runs as a real subprocess; the
Shop itself is in tests/support/shop.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.commands import demo
from orchestrator.postgres.cluster import Cluster
from tests.support.shop import Shop

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    server = Cluster().init().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def shop(cluster: Cluster, tmp_path: Path) -> Iterator[Shop]:
    n = next(_names)
    prod, staging = f"shop{n}", f"shop{n}_staging"
    staging_url = demo.create_shop(cluster, staging)
    prod_url = demo.create_shop(cluster, prod)
    made = Shop(cluster, tmp_path / "project", prod, staging, prod_url, staging_url)
    made.configure()
    yield made
    made.stop_all()
