"""What the S3 and RDS modules share: where the endpoint is, one error boundary, deadlines.

Imported only when a window uses S3 or RDS, so that boto3 stays out of every other start-up.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from orchestrator.errors import PhaseFailed, PhaseTimeout
from orchestrator.redact import redact

DEFAULT_REGION = "us-east-1"


def client(service: str, config: Config) -> Any:
    """A client for this machine's credentials; ``AWS_ENDPOINT_URL_<SERVICE>`` or
    ``AWS_ENDPOINT_URL`` (an S3-compatible store, moto) replaces AWS's own endpoint."""
    endpoint = None
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        endpoint = (os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
                    or os.environ.get("AWS_ENDPOINT_URL"))
    session = boto3.session.Session()
    if endpoint and service == "s3":  # custom endpoints rarely serve bucket.<host> names
        config = config.merge(Config(s3={"addressing_style": "path"}))
    region = os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
    return session.client(service, endpoint_url=endpoint, region_name=region,  # type: ignore[call-overload]
                          config=config)


def check_deadline(deadline: float, doing: str) -> None:
    if time.time() >= deadline:
        raise PhaseTimeout(f"the deadline passed {doing}")


@contextlib.contextmanager
def boundary(doing: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """botocore errors (and ``also``) become one PhaseFailed sentence, secrets masked."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PhaseFailed(redact(f"{doing} failed: {error.get('Code', 'error')}"
                                 f" {error.get('Message', '')}".strip())) from exc
    except (BotoCoreError, *also) as exc:  # type: ignore[misc]
        raise PhaseFailed(redact(f"{doing} failed: {exc}")) from exc
