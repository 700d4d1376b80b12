"""moto's standalone server for the session, on loopback, and a fresh fake AWS account per test.

The server is a real ``moto.server`` process answering HTTP as S3 and RDS do; the code under test
builds its own boto3 clients from ``AWS_ENDPOINT_URL``, exactly as it would in production.
Test modules import both fixtures: ``from tests.integration.moto import moto_server, aws_env``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 30
# Never through a proxy, whatever the environment says: the server is on this machine.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Anything that could send a client elsewhere than the server, or sign as a real account.
_FOREIGN = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_RDS", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reset(url: str) -> None:
    """Forget every bucket, object, instance and snapshot."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")  # noqa: S310 - http, loopback
    with _LOOPBACK.open(request, timeout=5) as answer:
        answer.read()


def _wait_until_answering(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    end = time.monotonic() + START_SECONDS
    while True:
        if server.poll() is not None:
            pytest.fail(f"moto's server exited with {server.returncode}:\n{log.read_text()}")
        try:
            reset(url)
        except OSError:
            if time.monotonic() > end:
                pytest.fail(f"moto's server did not answer within {START_SECONDS}s:\n"
                            f"{log.read_text()}")
            time.sleep(0.1)
        else:
            return


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a ``python -m moto.server`` process."""
    folder = tmp_path_factory.mktemp("moto")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_answering(server, url, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> str:
    """Point every boto3 client at the server, with dummy credentials and an empty account."""
    for name in _FOREIGN:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    reset(moto_server)
    return moto_server
