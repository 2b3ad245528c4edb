"""Regenerate the Teams app icons (stdlib only): ``python -m bot.teams_app.make_icons``.

- ``color.png``: 192x192, full colour: a white life-ring style help mark on the accent colour.
- ``outline.png``: 32x32, white on transparent (the only colours Teams allows in outline icons).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

ACCENT = (0x2B, 0x57, 0x97)
WHITE = (0xFF, 0xFF, 0xFF)


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    raw = b"".join(b"\x00" + row for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _mark(x: float, y: float) -> bool:
    """The help mark in unit coordinates (0..1): a ring with an "i" inside."""
    dx, dy = x - 0.5, y - 0.5
    r2 = dx * dx + dy * dy
    ring = 0.30**2 <= r2 <= 0.40**2
    dot = (x - 0.5) ** 2 + (y - 0.34) ** 2 <= 0.055**2
    stem = abs(x - 0.5) <= 0.045 and 0.44 <= y <= 0.68
    return ring or dot or stem


def _coverage(px: int, py: int, size: int, samples: int = 4) -> float:
    hits = sum(
        _mark((px + (i + 0.5) / samples) / size, (py + (j + 0.5) / samples) / size)
        for i in range(samples)
        for j in range(samples)
    )
    return hits / samples**2


def color_icon(size: int = 192) -> bytes:
    """Full-colour icon: white mark blended over the accent colour."""
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            c = _coverage(px, py, size)
            row += bytes(round(a + (w - a) * c) for a, w in zip(ACCENT, WHITE, strict=True)) + b"\xff"
        rows.append(bytes(row))
    return _png(size, size, rows)


def outline_icon(size: int = 32) -> bytes:
    """Outline icon: white where the mark is, fully transparent elsewhere."""
    rows = [
        b"".join(bytes(WHITE) + (b"\xff" if _coverage(px, py, size) >= 0.5 else b"\x00") for px in range(size))
        for py in range(size)
    ]
    return _png(size, size, rows)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    (here / "color.png").write_bytes(color_icon())
    (here / "outline.png").write_bytes(outline_icon())
