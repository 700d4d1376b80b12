"""Backup archives off the machine: a ``pg_dump -Fd`` folder and its manifest, to S3 and back.

Layout: the archive's files under ``<prefix>/<name>/``, its manifest as ``<prefix>/<name>.sha256``,
uploaded last, once every file is verified: an archive without its manifest in S3 is an
unfinished upload.

How an upload is verified. Files go up through boto3's managed transfer (multipart, parts in
parallel) with ``ChecksumAlgorithm="SHA256"``; S3 checks each request's SHA-256 on receipt and
keeps it. ``head_object(ChecksumMode="ENABLED")`` gives a single-part object's SHA-256, compared
with the manifest directly. A multipart object reports a composite ``<b64>-<parts>``, the
SHA-256 of its parts' binary SHA-256s, which no whole-file digest can be compared with: the
local file is read once, hashed whole (it must still match the manifest) and per part at the
size S3 reports for part 1 (``head_object(PartNumber=1)``), and the composite rebuilt from
those parts must equal S3's. An object with no SHA-256 (written by another tool) or whose
layout cannot be rebuilt (parts of unequal sizes) is downloaded and hashed instead: slower,
same verdict. Against moto's server: its HEAD drops the ``-<parts>`` suffix (the ETag's
``-<parts>`` still says multipart, as on S3), and it keeps a single PUT's checksum as sent
where S3 would check it against the body (BadDigest); its multipart composite is computed
from the parts it received, as S3 does.

A download is trusted only once every file, hashed here, matches the manifest: it is built in a
hidden sibling folder and renamed into place after that. Transfers are polled and cancelled at
the deadline; a request in flight can outlive it by at most one ``READ_TIMEOUT``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import ClientError
from s3transfer.exceptions import RetriesExceededError

from orchestrator.cloud import aws
from orchestrator.errors import ConfigError, PhaseFailed
from orchestrator.postgres.archive import read_manifest, same_names
from orchestrator.redact import redact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef, ObjectTypeDef
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

MIB = 1024 * 1024
_boundary = functools.partial(aws.boundary, also=(RetriesExceededError, OSError))
PART_SIZE = 8 * MIB  # s3transfer doubles it for a file that would need over 10,000 parts
WORKERS = 8
POLL_SECONDS = 0.05
READ_TIMEOUT = 60
TRANSFER = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                          max_concurrency=WORKERS, preferred_transfer_client="classic")
_SHA256 = {"ChecksumAlgorithm": "SHA256"}
_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?")
_SEGMENT = re.compile(r"(?!\.\.?$)[^\s/]+")
_MISSING = {"404", "NoSuchKey", "NotFound"}
Poll = Callable[[], None]


class _Pending(Protocol):
    def done(self) -> bool: ...


@dataclass(frozen=True)
class _Place:
    """Where one archive lives: its files under ``folder`` (ends with a slash), its manifest
    at ``manifest_key``."""

    bucket: str
    name: str
    folder: str
    manifest_key: str

    @classmethod
    def of(cls, bucket: str, prefix: str, name: str) -> _Place:
        base = f"{prefix}/{name}" if prefix else name
        return cls(bucket, name, f"{base}/", f"{base}.sha256")

    @classmethod
    def parse(cls, uri: str) -> _Place:
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ConfigError(f"{redact(uri)!r} names a bucket, not an archive: add its path.")
        prefix, _, name = key.rpartition("/")
        return cls.of(bucket, prefix, name)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.folder.rstrip('/')}"

    def files(self, archive: Path, expected: dict[str, str]) -> dict[str, tuple[Path, str]]:
        """S3 key -> (local file, manifest digest), for every file the manifest names."""
        return {self.folder + name: (archive / name, digest) for name, digest in expected.items()}


def make_client() -> S3Client:
    config = Config(connect_timeout=10, read_timeout=READ_TIMEOUT,
                    max_pool_connections=2 * WORKERS,
                    retries={"mode": "standard", "max_attempts": 3})
    return cast("S3Client", aws.client("s3", config))


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``."""
    match = _URI.fullmatch(uri)
    prefix = (match.group("prefix") or "").removesuffix("/") if match else ""
    if match is None or (prefix and not all(map(_SEGMENT.fullmatch, prefix.split("/")))):
        raise ConfigError(f"{redact(uri)!r} is not an S3 location like s3://bucket/prefix"
                          " (lowercase bucket name, no empty, '.' or '..' parts).")
    return match.group("bucket"), prefix


def upload_archive(archive: Path, manifest: Path, s3_uri: str, *, deadline: float,
                   client: S3Client | None = None, poll: Poll = lambda: None) -> str:
    """Upload the archive and verify it, then its manifest; the archive's S3 URI."""
    place = _Place.of(*parse_s3_uri(s3_uri), archive.name)
    aws.check_deadline(deadline, f"before starting to upload {archive}")
    expected = read_manifest(manifest)
    with _boundary(f"reading {archive}"):
        present = [p.name for p in archive.iterdir() if p.is_file()]
        same_names(expected, present, str(archive))
    s3 = client or make_client()
    _transfer(s3, f"uploading {archive} to {place.uri}", deadline, poll, lambda manager: [
        manager.upload(str(archive / name), place.bucket, place.folder + name, _SHA256)
        for name in expected])
    _verify_objects(s3, place, place.files(archive, expected), deadline, poll)
    _transfer(s3, f"uploading {manifest}", deadline, poll, lambda manager: [
        manager.upload(str(manifest), place.bucket, place.manifest_key, _SHA256)])
    _verify_objects(s3, place, {place.manifest_key: (manifest, _sha256(manifest, deadline))},
                    deadline, poll)
    return place.uri


def verify_archive(archive: Path, manifest: Path, archive_uri: str, *, deadline: float,
                   client: S3Client | None = None, poll: Poll = lambda: None) -> None:
    """S3 holds exactly the manifest's files with its digests, and the manifest itself;
    PhaseFailed names every object that is missing, unexpected or different."""
    place = _Place.parse(archive_uri)
    aws.check_deadline(deadline, f"before starting to verify {archive_uri}")
    expected = read_manifest(manifest)
    s3 = client or make_client()
    same_names(expected, _names_under(s3, place), place.uri)
    objects = place.files(archive, expected)
    objects[place.manifest_key] = (manifest, _sha256(manifest, deadline))
    _verify_objects(s3, place, objects, deadline, poll)


def download_archive(s3_uri_of_archive: str, dest: Path, *, deadline: float,
                     client: S3Client | None = None, poll: Poll = lambda: None
                     ) -> tuple[Path, Path]:
    """Fetch the archive and its manifest into ``dest``, every file checked; their paths."""
    place = _Place.parse(s3_uri_of_archive)
    aws.check_deadline(deadline, f"before starting to download {place.uri}")
    archive, manifest = dest / place.name, dest / f"{place.name}.sha256"
    if archive.exists() or manifest.exists():
        raise PhaseFailed(f"{archive} already exists: download into another folder")
    s3 = client or make_client()
    staging = dest / f".{place.name}.partial"
    try:
        with _boundary(f"preparing {staging}"):
            shutil.rmtree(staging, ignore_errors=True)
            (staging / place.name).mkdir(parents=True)
        _fetch(s3, place, staging / place.name, deadline, poll)
        with _boundary(f"moving the download into {dest}"):
            (staging / place.name).rename(archive)
            (staging / manifest.name).rename(manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return archive, manifest


def list_archives(s3_uri: str, *, client: S3Client | None = None) -> list[dict[str, Any]]:
    """Archives under ``s3_uri``, newest first: name, size_bytes, last_modified (ISO 8601),
    and complete (False for an upload that never reached its manifest)."""
    bucket, prefix = parse_s3_uri(s3_uri)
    base = f"{prefix}/" if prefix else ""
    found: dict[str, dict[str, Any]] = {}
    for item in _objects(client or make_client(), bucket, base):
        name, slash, _file = item["Key"].removeprefix(base).partition("/")
        if slash or name.endswith(".sha256"):
            entry = found.setdefault(name.removesuffix(".sha256"), {
                "size_bytes": 0, "last_modified": item["LastModified"], "complete": False})
            entry["last_modified"] = max(entry["last_modified"], item["LastModified"])
            entry["size_bytes"] += item["Size"] if slash else 0
            entry["complete"] |= not slash
    newest = sorted(found.items(), key=lambda pair: pair[1]["last_modified"], reverse=True)
    return [{"name": name, **entry, "last_modified": entry["last_modified"].isoformat()}
            for name, entry in newest]


def _fetch(s3: S3Client, place: _Place, archive: Path, deadline: float, poll: Poll) -> None:
    """The manifest, then the files it names into ``archive``, each checked against it."""
    with _boundary(f"reading {place.uri}"):
        _head(s3, place.bucket, place.manifest_key,
              hint=": no such archive, or its upload never finished")
    manifest = archive.with_name(f"{archive.name}.sha256")
    _transfer(s3, f"downloading {place.manifest_key}", deadline, poll, lambda manager: [
        manager.download(place.bucket, place.manifest_key, str(manifest))])
    expected = read_manifest(manifest)
    same_names(expected, _names_under(s3, place), place.uri)
    _transfer(s3, f"downloading {place.uri}", deadline, poll, lambda manager: [
        manager.download(place.bucket, place.folder + n, str(archive / n)) for n in expected])
    _run_parallel([functools.partial(_check_file, archive / name, digest,
                                     f"{place.uri}/{name}", deadline)
                   for name, digest in expected.items()], f"checking {place.uri}", deadline, poll)


def _verify_objects(s3: S3Client, place: _Place, objects: dict[str, tuple[Path, str]],
                    deadline: float, poll: Poll) -> None:
    _run_parallel([functools.partial(_verify_object, s3, place.bucket, key, local=path,
                                     digest=digest, deadline=deadline)
                   for key, (path, digest) in objects.items()],
                  f"verifying {place.uri}", deadline, poll)


def _verify_object(s3: S3Client, bucket: str, key: str, *, local: Path, digest: str,
                   deadline: float) -> None:
    where = f"s3://{bucket}/{key}"
    with _boundary(f"verifying {where}"):
        head = _head(s3, bucket, key)
        value, parts = head.get("ChecksumSHA256", "").partition("-")[0], _part_count(head)
        if value and not parts:
            _compare(where, _hex(value), digest)
        elif not value or not _parts_match(s3, bucket, key, local=local, digest=digest,
                                           composite=value, parts=parts, deadline=deadline):
            _compare(where, _remote_sha256(s3, bucket, key, deadline), digest)


def _parts_match(s3: S3Client, bucket: str, key: str, *, local: Path, digest: str,
                 composite: str, parts: int, deadline: float) -> bool:
    """S3's composite checksum against the same rebuilt from the local file; False when S3's
    part layout cannot be rebuilt."""
    whole, digests = _local_digests(local, _head(s3, bucket, key, part=1)["ContentLength"],
                                    deadline)
    if whole != digest:
        raise PhaseFailed(f"{local} no longer matches its manifest")
    if len(digests) != parts:
        return False
    rebuilt = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    if rebuilt != composite:
        raise PhaseFailed(f"s3://{bucket}/{key} is not the file uploaded: S3's checksum of its"
                          f" {parts} parts is {composite}, the local file's is {rebuilt}")
    return True


def _part_count(head: HeadObjectOutputTypeDef) -> int:
    """Parts of a multipart object, from the ``-<parts>`` of its checksum or of its ETag (moto
    keeps only the latter); 0 for a single PUT. One part is still multipart: a composite."""
    for text in (head.get("ChecksumSHA256", ""), head.get("ETag", "").strip('"')):
        head_text, dash, count = text.rpartition("-")
        if dash and head_text and count.isdigit():
            return int(count)
    return 0


def _head(s3: S3Client, bucket: str, key: str, *, part: int | None = None,
          hint: str = "") -> HeadObjectOutputTypeDef:
    try:
        if part is None:
            return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", PartNumber=part)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            raise PhaseFailed(f"s3://{bucket}/{key} is missing{hint}") from exc
        raise


def _remote_sha256(s3: S3Client, bucket: str, key: str, deadline: float) -> str:
    digest = hashlib.sha256()
    with contextlib.closing(s3.get_object(Bucket=bucket, Key=key)["Body"]) as body:
        for chunk in body.iter_chunks(MIB):
            aws.check_deadline(deadline, f"while hashing s3://{bucket}/{key}")
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path, expected: str, where: str, deadline: float) -> None:
    _compare(where, _sha256(path, deadline), expected)


def _compare(where: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise PhaseFailed(f"{where} does not match the manifest: its sha256 is {actual},"
                          f" the manifest says {expected}")


def _hex(b64: str) -> str:
    try:
        return base64.b64decode(b64, validate=True).hex()
    except ValueError:
        return b64


def _sha256(path: Path, deadline: float) -> str:
    return _local_digests(path, None, deadline)[0]


def _local_digests(path: Path, part_size: int | None, deadline: float
                   ) -> tuple[str, list[bytes]]:
    """The file's sha256 (hex) and each ``part_size`` slice's binary sha256, in one read."""
    whole, part, filled, parts = hashlib.sha256(), hashlib.sha256(), 0, []
    with _boundary(f"reading {path}"), path.open("rb") as stream:
        while chunk := stream.read(MIB if part_size is None else min(MIB, part_size - filled)):
            aws.check_deadline(deadline, f"while hashing {path}")
            whole.update(chunk)
            part.update(chunk)
            filled += len(chunk)
            if filled == part_size:
                parts.append(part.digest())
                part, filled = hashlib.sha256(), 0
    return whole.hexdigest(), [*parts, part.digest()] if filled else parts


def _names_under(s3: S3Client, place: _Place) -> list[str]:
    return [item["Key"].removeprefix(place.folder)
            for item in _objects(s3, place.bucket, place.folder)]


def _objects(s3: S3Client, bucket: str, prefix: str) -> list[ObjectTypeDef]:
    with _boundary(f"listing s3://{bucket}/{prefix}"):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item for page in pages for item in page.get("Contents", [])]


def _transfer(s3: S3Client, doing: str, deadline: float, poll: Poll,
              start: Callable[[TransferManager], list[TransferFuture]]) -> None:
    """Transfers on one manager; leaving early (deadline, poll, error) cancels them all and
    aborts unfinished multipart uploads."""
    with _boundary(doing), create_transfer_manager(s3, TRANSFER) as manager:
        futures = start(manager)
        _await(futures, doing, deadline, poll)
        for future in futures:
            future.result()


def _run_parallel(jobs: Sequence[Callable[[], None]], doing: str, deadline: float,
                  poll: Poll) -> None:
    """Every job, on threads; then one PhaseFailed naming every failure."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures: list[Future[None]] = [pool.submit(job) for job in jobs]
        try:
            _await(futures, doing, deadline, poll)
        finally:
            for future in futures:
                future.cancel()
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    failed = [exc for exc in errors if isinstance(exc, PhaseFailed)]
    if len(failed) < len(errors):
        raise next(exc for exc in errors if not isinstance(exc, PhaseFailed))
    if failed:
        raise PhaseFailed("; ".join(exc.message for exc in failed)) from failed[0]


def _await(futures: Sequence[_Pending], doing: str, deadline: float, poll: Poll) -> None:
    while not all(future.done() for future in futures):
        poll()
        aws.check_deadline(deadline, f"while {doing}")
        time.sleep(POLL_SECONDS)
