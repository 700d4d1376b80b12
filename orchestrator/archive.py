"""A backup archive on disk: a ``pg_dump -Fd`` folder and its sha256 manifest beside it.

The manifest (``<archive>.sha256``, in ``sha256sum`` format) is written right after the dump
and checked before any restore trusts the archive, so a corrupted or truncated file is caught
first, not half-way through a rollback.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.errors import PhaseFailed

CHUNK = 1024 * 1024


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
    try:
        lines = manifest.read_text().splitlines()
    except OSError as exc:
        raise PhaseFailed(f"the archive's manifest {manifest} cannot be read: {exc}") from exc
    entries: dict[str, str] = {}
    for line in filter(str.strip, lines):
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def verify(archive: Path, jobs: int = 2) -> None:
    """Every file the manifest names is there with its digest, and nothing else is."""
    expected = read_manifest(manifest_path(archive))
    if not archive.is_dir():
        raise PhaseFailed(f"the archive {archive} is missing")
    present = sorted(f.name for f in archive.iterdir() if f.is_file())
    extra = sorted(set(present) - set(expected))
    missing = sorted(set(expected) - set(present))
    if missing or extra:
        raise PhaseFailed(f"the archive {archive} does not match its manifest"
                          f" (missing {missing or 'none'}, unexpected {extra or 'none'})")
    actual = _digests(archive, present, jobs)
    bad = [name for name in present if actual[name] != expected[name]]
    if bad:
        raise PhaseFailed(f"the archive {archive} is corrupted: {', '.join(bad)} no longer"
                          " match the manifest written after the dump")
