"""Backup archives to S3 and back, against moto's standalone server on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from orchestrator.cloud import s3 as s3store
from orchestrator.errors import AbortRequested, ConfigError, PhaseFailed, PhaseTimeout
from tests.integration.moto import aws_env, moto_server  # noqa: F401

BUCKET = "window-backups"
LOCATION = f"s3://{BUCKET}/prod/"
BIG = 17 * 1024 * 1024 + 12345  # three parts of s3store.PART_SIZE
FILES = {"toc.dat": 4096, "3001.dat.gz": BIG, "3002.dat.gz": 100_000, "3003.dat.gz": 0,
         "3004.dat.gz": s3store.PART_SIZE}  # one part, yet multipart: a composite of one


@pytest.fixture
def s3(aws_env: str) -> Any:  # noqa: F811
    """The test's own client (boto3 reads AWS_ENDPOINT_URL itself), with an empty bucket."""
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A pg_dump -Fd shaped folder of random files, and its sha256sum manifest beside it."""
    folder = tmp_path / "dumps" / "20260130T0500-shop"
    folder.mkdir(parents=True)
    for name, size in FILES.items():
        (folder / name).write_bytes(os.urandom(size))
    lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in FILES]
    folder.with_name(folder.name + ".sha256").write_text("".join(lines))
    return folder


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    """A loopback URL nothing answers on: the port stays bound but never listens."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"


def manifest_of(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def soon(seconds: float = 60) -> float:
    return time.time() + seconds


def keys(s3: Any) -> set[str]:
    return {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def upload(archive: Path) -> str:
    return s3store.upload_archive(archive, manifest_of(archive), LOCATION, deadline=soon())


def test_upload_verifies_by_checksum_and_download_gives_back_the_bytes(
        s3: Any, archive: Path, aws_env: str, tmp_path: Path) -> None:  # noqa: F811
    client = s3store.make_client()
    assert client.meta.endpoint_url == aws_env
    fetched: list[str] = []
    client.meta.events.register("before-call.s3.GetObject",
                                lambda params, **_: fetched.append(params["Key"]))
    uri = s3store.upload_archive(archive, manifest_of(archive), LOCATION, deadline=soon(),
                                 client=client)

    assert uri == f"s3://{BUCKET}/prod/{archive.name}"
    assert keys(s3) == {f"prod/{archive.name}/{n}" for n in FILES} | {
        f"prod/{archive.name}.sha256"}
    big = s3.head_object(Bucket=BUCKET, Key=f"prod/{archive.name}/3001.dat.gz", PartNumber=1)
    assert big["PartsCount"] == 3
    assert fetched == []  # verified from S3's checksums, nothing downloaded

    dest = tmp_path / "restore"
    dest.mkdir()
    got = s3store.download_archive(uri, dest, deadline=soon())
    assert got == (dest / archive.name, dest / f"{archive.name}.sha256")
    assert sorted(p.name for p in dest.iterdir()) == [archive.name, f"{archive.name}.sha256"]
    for name in FILES:
        assert (got[0] / name).read_bytes() == (archive / name).read_bytes()
    assert got[1].read_bytes() == manifest_of(archive).read_bytes()

    [listed] = s3store.list_archives(LOCATION)
    assert listed["name"] == archive.name
    assert listed["size_bytes"] == sum(FILES.values())
    assert listed["complete"] is True


def test_a_changed_object_is_named_by_verify_and_download(
        s3: Any, archive: Path, tmp_path: Path) -> None:
    uri = upload(archive)
    s3.put_object(Bucket=BUCKET, Key=f"prod/{archive.name}/toc.dat", Body=b"not the toc",
                  ChecksumAlgorithm="SHA256")

    with pytest.raises(PhaseFailed) as verified:
        s3store.verify_archive(archive, manifest_of(archive), uri, deadline=soon())
    assert "toc.dat does not match the manifest" in verified.value.message
    assert "3001" not in verified.value.message

    with pytest.raises(PhaseFailed) as downloaded:
        s3store.download_archive(uri, tmp_path / "restore", deadline=soon())
    assert "toc.dat does not match the manifest" in downloaded.value.message
    assert list((tmp_path / "restore").iterdir()) == []


def test_a_replaced_multipart_object_and_one_without_sha256_are_named(
        s3: Any, archive: Path) -> None:
    uri = upload(archive)
    folder = f"prod/{archive.name}"
    impostor = archive.parent / "impostor"
    impostor.write_bytes(os.urandom(BIG))
    s3.upload_file(str(impostor), BUCKET, f"{folder}/3001.dat.gz",
                   ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                   Config=TransferConfig(multipart_chunksize=s3store.PART_SIZE))
    s3.put_object(Bucket=BUCKET, Key=f"{folder}/3002.dat.gz", Body=b"no sha256 kept")
    assert "ChecksumSHA256" not in s3.head_object(
        Bucket=BUCKET, Key=f"{folder}/3002.dat.gz", ChecksumMode="ENABLED")

    with pytest.raises(PhaseFailed) as failed:
        s3store.verify_archive(archive, manifest_of(archive), uri, deadline=soon())
    assert f"{folder}/3001.dat.gz is not the file uploaded" in failed.value.message
    assert "checksum of its 3 parts" in failed.value.message
    assert f"{folder}/3002.dat.gz does not match the manifest" in failed.value.message
    assert "toc.dat" not in failed.value.message


def test_a_missing_object_is_named(s3: Any, archive: Path, tmp_path: Path) -> None:
    uri = upload(archive)
    s3.delete_object(Bucket=BUCKET, Key=f"prod/{archive.name}/3003.dat.gz")

    with pytest.raises(PhaseFailed, match=r"missing \['3003.dat.gz'\]"):
        s3store.verify_archive(archive, manifest_of(archive), uri, deadline=soon())
    with pytest.raises(PhaseFailed, match=r"missing \['3003.dat.gz'\]"):
        s3store.download_archive(uri, tmp_path, deadline=soon())
    s3.delete_object(Bucket=BUCKET, Key=f"prod/{archive.name}.sha256")
    with pytest.raises(PhaseFailed, match="its upload never finished"):
        s3store.download_archive(uri, tmp_path, deadline=soon())


def test_an_archive_that_differs_from_its_manifest_is_not_uploaded(
        s3: Any, archive: Path) -> None:
    (archive / "stray.tmp").write_bytes(b"x")
    with pytest.raises(PhaseFailed, match=r"unexpected \['stray.tmp'\]"):
        upload(archive)
    assert keys(s3) == set()


@pytest.mark.parametrize("uri", [
    "window-backups/prod", "s3://", "s3://Window-Backups/prod", "s3://window-backups//prod",
    "https://window-backups/prod", "s3://window-backups/a/../b", "s3://wb/prod",
])
def test_a_bad_s3_uri_is_a_config_error(uri: str, archive: Path) -> None:
    with pytest.raises(ConfigError, match="is not an S3 location"):
        s3store.upload_archive(archive, manifest_of(archive), uri, deadline=soon())


def test_s3_uris_parse_into_bucket_and_prefix() -> None:
    assert s3store.parse_s3_uri("s3://window-backups/prod/eu/") == ("window-backups", "prod/eu")
    assert s3store.parse_s3_uri("s3://window-backups") == ("window-backups", "")
    with pytest.raises(ConfigError, match="names a bucket, not an archive"):
        s3store.download_archive("s3://window-backups/", Path("unused"), deadline=soon())


def test_a_deadline_already_past_stops_before_anything_is_sent(
        s3: Any, archive: Path, tmp_path: Path) -> None:
    with pytest.raises(PhaseTimeout, match="deadline passed"):
        s3store.upload_archive(archive, manifest_of(archive), LOCATION, deadline=time.time())
    assert keys(s3) == set()
    uri = upload(archive)
    with pytest.raises(PhaseTimeout):
        s3store.download_archive(uri, tmp_path / "restore", deadline=time.time() - 1)
    assert not (tmp_path / "restore").exists()


def test_the_deadline_stops_an_upload_before_its_manifest(
        s3: Any, archive: Path) -> None:
    # Time for the first file to go up on a loaded machine (1 s was not, with the suite and
    # another window running: nothing was listed); then the poll sleeps out the deadline.
    deadline = soon(3)
    with pytest.raises(PhaseTimeout, match="while uploading"):
        s3store.upload_archive(archive, manifest_of(archive), LOCATION, deadline=deadline,
                               poll=lambda: time.sleep(max(0.0, deadline - time.time())))
    assert f"prod/{archive.name}.sha256" not in keys(s3)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert s3store.list_archives(LOCATION)[0]["complete"] is False


def test_an_abort_asked_during_the_upload_stops_it(s3: Any, archive: Path) -> None:
    def abort() -> None:
        raise AbortRequested("the operator asked for a rollback")

    with pytest.raises(AbortRequested):
        s3store.upload_archive(archive, manifest_of(archive), LOCATION, deadline=soon(),
                               poll=abort)
    assert f"prod/{archive.name}.sha256" not in keys(s3)


def test_the_s3_endpoint_wins_and_an_unreachable_one_is_one_masked_sentence(
        s3: Any, archive: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    with closed_port() as dead:
        monkeypatch.setenv("AWS_ENDPOINT_URL", dead.replace("://", "://window:s3cr3t-pw@"))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env)
        assert upload(archive).endswith(archive.name)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
        started = time.monotonic()
        with pytest.raises(PhaseFailed, match=r"listing s3://window-backups/prod/ failed: "
                                              r"Could not connect") as failed:
            s3store.list_archives(LOCATION)
    assert "window:***@127.0.0.1" in failed.value.message
    assert "s3cr3t" not in failed.value.message
    assert time.monotonic() - started < 15
