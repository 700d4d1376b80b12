"""The shared state's objects: small blobs with compare-and-swap, in a folder or under an S3
prefix, and copies of files (reports, the audit log) shelved beside them.

A ``LocalStore`` makes its compare-and-swap atomic with an ``flock``; an ``S3Store`` uses S3's
conditional writes (``If-Match``, ``If-None-Match: *``), the way Terraform's S3 backend keeps
state and lock. Everything above (the lease, the journal's copy) is built on ``Store``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import GateRefused, PhaseError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from structlog.typing import FilteringBoundLogger

    from orchestrator.config import Settings

_CONFLICTS = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"404", "NoSuchKey", "NotFound"}


class Conflict(Exception):
    """A conditional write found the object other than the writer expected."""


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str


class Store(Protocol):
    """Small objects with compare-and-swap: the state's lease, journal and records."""

    def get(self, key: str) -> Blob | None: ...

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str: ...

    def delete(self, key: str) -> None: ...

    def where(self, key: str) -> str: ...


class LocalStore:
    """Files under a folder; the compare-and-swap is made atomic by an ``flock``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Blob | None:
        try:
            data = (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        return Blob(data, _digest(data))

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            current = self.get(key)
            if (if_none_match and current is not None) or \
                    (if_match is not None and (current is None or current.etag != if_match)):
                raise Conflict(key)
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(path)
        return _digest(data)

    def delete(self, key: str) -> None:
        with self._locked():
            (self.root / key).unlink(missing_ok=True)

    def where(self, key: str) -> str:
        return str(self.root / key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".store.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class S3Store:
    """Objects under ``s3://bucket/prefix`` with S3's conditional writes."""

    def __init__(self, uri: str, client: S3Client | None = None) -> None:
        from orchestrator.cloud import s3  # boto3 only when S3 is used

        self.bucket, self.prefix = s3.parse_s3_uri(uri)
        self._s3 = client or s3.make_client()

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def get(self, key: str) -> Blob | None:
        from botocore.exceptions import ClientError

        with _boundary(f"reading {self.where(key)}"):
            try:
                answer = self._s3.get_object(Bucket=self.bucket, Key=self.key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            return Blob(answer["Body"].read(), answer["ETag"])

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False, meta: dict[str, str] | None = None) -> str:
        from botocore.exceptions import ClientError

        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions["IfMatch"] = if_match
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        with _boundary(f"writing {self.where(key)}"):
            try:
                answer = self._s3.put_object(Bucket=self.bucket, Key=self.key(key), Body=data,
                                             Metadata=meta or {}, **conditions)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                    raise Conflict(key) from exc
                raise
            return answer["ETag"]

    def delete(self, key: str) -> None:
        with _boundary(f"deleting {self.where(key)}"):
            self._s3.delete_object(Bucket=self.bucket, Key=self.key(key))

    def upload_file(self, key: str, path: Path) -> None:
        with _boundary(f"writing {self.where(key)}"):
            self._s3.upload_file(str(path), self.bucket, self.key(key))


def store_for(settings: Settings) -> Store:
    """The state's store: the state folder, or the S3 prefix."""
    if settings.state.backend == "s3":
        return S3Store(str(settings.state.uri))
    return LocalStore(settings.state_dir)


@contextlib.contextmanager
def _boundary(doing: str) -> Iterator[None]:
    """S3's errors as one sentence; the shared state being out of reach is a refusal (3)."""
    from orchestrator.cloud import aws

    try:
        with aws.boundary(doing):
            yield
    except PhaseError as exc:
        raise GateRefused(f"the shared state cannot be reached: {exc.message}") from exc


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shelve_audit(settings: Settings) -> None:
    """This machine's audit log, copied beside the shared journal."""
    folder = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:8]
    shelve(settings, f"audit/{socket.gethostname()}-{folder}.jsonl",
           settings.state_dir / "audit.jsonl")


def shelve(settings: Settings, key: str, path: Path) -> None:
    """Copy a file (a report, the audit log) into the shared state, if it is S3; a copy that
    cannot be made is a warning, never a different outcome."""
    if settings.state.backend != "s3" or not path.is_file():
        return
    try:
        S3Store(str(settings.state.uri)).upload_file(key, path)
    except GateRefused as exc:
        logger().warning("not_shelved", key=key, error=exc.message)


def logger() -> FilteringBoundLogger:
    """The logger, loaded on first use: reading a local state (`window status`) needs none."""
    from orchestrator import log

    return log.get()
