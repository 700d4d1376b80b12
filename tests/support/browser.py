"""A real headless chromium rendering a page to a PNG, and the PNG's pixels counted by colour:
the HTML report and the banner's maintenance page are checked as a browser shows them."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page: Path, png: Path) -> None:
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    if browser is None:
        pytest.fail("headless chromium is needed for this test: apt-get install -y chromium")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={png.parent / 'chromium-profile'}", f"--screenshot={png}",
         "--window-size=1200,1000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


def pixels_of(png: Path, colour: str) -> int:
    """How many pixels of exactly ``colour`` (#rrggbb) an 8-bit RGB(A) PNG holds."""
    width, height, channels, rows = decode_png(png.read_bytes())
    wanted = bytes.fromhex(colour.removeprefix("#"))
    return sum(1 for row in rows for x in range(0, width * channels, channels)
               if row[x:x + 3] == wanted) if height else 0


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, channels and unfiltered rows of a non-interlaced 8-bit RGB/RGBA PNG."""
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        if kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour_type, interlace) in ((8, 2, 0), (8, 6, 0)), "unexpected PNG kind"
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous,
                       channels)
        rows.append(bytes(row))
        previous = row
    return width, height, channels, rows


def unfilter(kind: int, row: bytearray, above: bytearray, bpp: int) -> bytearray:
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up, corner = above[i], above[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            guess = left + up - corner
            pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
            pick = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            row[i] = (row[i] + pick) & 0xFF
    return row
