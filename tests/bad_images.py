"""Real files with real defects, built on disk for the data-check tests (no fixtures shipped in git)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112


def pixels(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB array: smooth gradients plus noise (so JPEG behaves as on photos), distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y + seed * 37) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def good_jpeg(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    Image.fromarray(pixels(w, h, seed)).save(path, "JPEG", quality=90)
    return path


def good_png(path: Path, w: int = 48, h: int = 48, seed: int = 0) -> Path:
    Image.fromarray(pixels(w, h, seed)).save(path, "PNG")
    return path


def truncated_jpeg(path: Path, seed: int = 1) -> Path:
    good_jpeg(path, 96, 80, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, scan data cut: open() works, load() fails
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def cmyk_jpeg(path: Path, seed: int = 2) -> Path:
    Image.fromarray(pixels(48, 40, seed)).convert("CMYK").save(path, "JPEG", quality=90)
    return path


def png_16bit(path: Path, seed: int = 3) -> Path:
    arr = pixels(40, 40, seed)[..., 0].astype(np.uint16) * 257  # full 16-bit range
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    img.save(path, "PNG")
    return path


def palette_png_transparent(path: Path, seed: int = 4) -> Path:
    img = Image.fromarray(pixels(40, 40, seed)).convert("P", palette=Image.ADAPTIVE, colors=16)
    img.save(path, "PNG", transparency=0)
    return path


def rgba_png(path: Path, seed: int = 5) -> Path:
    arr = np.dstack([pixels(40, 40, seed), np.full((40, 40), 128, np.uint8)])
    Image.fromarray(arr, "RGBA").save(path, "PNG")
    return path


def gray_png(path: Path, seed: int = 6) -> Path:
    Image.fromarray(pixels(40, 40, seed)[..., 1], "L").save(path, "PNG")
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """Stored 80 wide x 48 high with a red block top-left; orientation 6 means "rotate 90 degrees clockwise
    to display", so the upright image is 48 x 80 with the red block top-right."""
    arr = np.full((48, 80, 3), (0, 0, 200), np.uint8)
    arr[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(arr).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pixel_bomb_png(path: Path, width: int = 12_000, height: int = 12_000) -> Path:
    """A valid 1-bit PNG of width x height black pixels: 144 M pixels in a ~20 KB file (zeros compress)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def tiny_png(path: Path, side: int = 10) -> Path:
    return good_png(path, side, side, seed=7)


def text_as_jpg(path: Path) -> Path:
    path.write_text("this is a caption file, not a photo\n", encoding="utf-8")
    return path


def svg_as_jpg(path: Path) -> Path:
    path.write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                    '<rect width="64" height="64" fill="red"/></svg>', encoding="utf-8")
    return path


def heic_as_jpg(path: Path) -> Path:
    """The first box of an iPhone HEIC (ftyp, brand heic) followed by junk: what a renamed HEIC starts with."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    path.write_bytes(struct.pack(">I", len(ftyp) + 4) + ftyp + bytes(200))
    return path
