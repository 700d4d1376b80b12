"""A backup archive on disk: a ``pg_dump -Fd`` folder and its sha256 manifest beside it.

The manifest (``<archive>.sha256``, in ``sha256sum`` format) is written right after the dump
and checked before any restore trusts the archive, so a corrupted or truncated file is caught
first, not half-way through a rollback.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.errors import PhaseFailed

CHUNK = 1024 * 1024
_MANIFEST_LINE = re.compile(
    r"(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>(?!\.\.?$)[^/\x00]+)")


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def size_bytes(archive: Path) -> int:
    return sum(f.stat().st_size for f in archive.iterdir() if f.is_file())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digests(archive: Path, names: list[str], jobs: int) -> dict[str, str]:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # hashlib releases the GIL
        return dict(zip(names, pool.map(lambda n: sha256_file(archive / n), names),
                        strict=True))


def write_manifest(archive: Path, jobs: int = 2) -> Path:
    names = sorted(f.name for f in archive.iterdir() if f.is_file())
    lines = [f"{digest}  {name}\n" for name, digest in _digests(archive, names, jobs).items()]
    manifest = manifest_path(archive)
    manifest.write_text("".join(lines))
    return manifest


def read_manifest(manifest: Path) -> dict[str, str]:
    """``sha256sum`` lines, name -> hex digest. Names must be plain file names: a manifest
    that came from elsewhere (S3) must not be able to write outside its archive."""
    try:
        lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise PhaseFailed(f"the archive's manifest {manifest} cannot be read: {exc}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if match := _MANIFEST_LINE.fullmatch(line):
            entries[match["name"]] = match["digest"].lower()
        elif line.strip():
            raise PhaseFailed(f"line {number} of {manifest} is not '<sha256>  <file name>'")
    if not entries:
        raise PhaseFailed(f"the manifest {manifest} names no files")
    return entries


def same_names(expected: Iterable[str], present: Iterable[str], where: str) -> None:
    missing, extra = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    if missing or extra:
        raise PhaseFailed(f"{where} does not match its manifest"
                          f" (missing {missing or 'none'}, unexpected {extra or 'none'})")


def verify(archive: Path, jobs: int = 2) -> None:
    """Every file the manifest names is there with its digest, and nothing else is."""
    expected = read_manifest(manifest_path(archive))
    if not archive.is_dir():
        raise PhaseFailed(f"the archive {archive} is missing")
    present = sorted(f.name for f in archive.iterdir() if f.is_file())
    same_names(expected, present, f"the archive {archive}")
    actual = _digests(archive, present, jobs)
    bad = [name for name in present if actual[name] != expected[name]]
    if bad:
        raise PhaseFailed(f"the archive {archive} is corrupted: {', '.join(bad)} no longer"
                          " match the manifest written after the dump")
