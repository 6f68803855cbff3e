"""One image file, checked: can it be read, decoded, is it sane, and what must be fixed before training.

:func:`check_image` is the unit of work of ``lugha data check``'s process pool: it takes a path and plain
options, returns a picklable :class:`ImageResult`, and never raises for a bad file (a field dataset of
thousands of phone photos must yield a report, not a traceback). Images that need a fix-up (EXIF
orientation, a non-RGB mode) are written once, upright and RGB, into a cache folder named by content
hash, so every loader of the cleaned manifest sees the same pixels whether or not it knows about EXIF.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lugha.atomic import atomic_path
from lugha.image_io import (FILE_TOO_LARGE, IMAGE_FORMATS, MAX_IMAGE_BYTES, MISSING_FILE, NOT_REGULAR_FILE,
                            UNREADABLE_FILE, ImageFileError, read_image_bytes)

# Stable kind ids of per-image problems; lugha.data.check.KINDS holds their severity and description.
# MISSING_FILE, UNREADABLE_FILE, NOT_REGULAR_FILE and FILE_TOO_LARGE come from lugha.image_io, which reads.
ZERO_BYTE = "zero_byte"
UNSUPPORTED_FORMAT = "unsupported_format"
DECOMPRESSION_BOMB = "decompression_bomb"
CORRUPT_IMAGE = "corrupt_image"
TINY_IMAGE = "tiny_image"
EXIF_ORIENTATION = "exif_orientation"
# Modes that to_rgb converts, by the kind id they are counted under.
MODE_KINDS = {
    "CMYK": "mode_cmyk",
    "I;16": "mode_16bit", "I;16B": "mode_16bit", "I;16L": "mode_16bit", "I": "mode_16bit", "F": "mode_16bit",
    "P": "mode_palette", "PA": "mode_palette",
    "RGBA": "mode_alpha", "LA": "mode_alpha", "RGBa": "mode_alpha", "La": "mode_alpha",
    "L": "mode_grayscale", "1": "mode_grayscale",
}
MODE_OTHER = "mode_other"  # YCbCr, LAB, HSV...: converted too, counted apart
LOSSY_FORMATS = {"JPEG", "MPO", "WEBP"}  # fixed copies of these are re-saved as JPEG, the rest as PNG
EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class ImageResult:
    """What one file turned out to be. ``problem`` is the skip kind (None when usable)."""

    path: str
    problem: str | None = None
    message: str = ""
    sha256: str | None = None
    size: tuple[int, int] | None = None  # (width, height) as stored, before EXIF rotation
    mode: str | None = None
    format: str | None = None
    fixes: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    fixed_path: str | None = None  # the upright RGB copy, when fixes were written


def sniff(head: bytes) -> str:
    """A human name for bytes Pillow cannot identify, so the message says *what* was renamed .jpg."""
    h = head.lstrip()
    if head[:4] == b"%!PS" or head[:4] == b"\xc5\xd0\xd3\xc6":
        return "PostScript/EPS (never decoded: Pillow would hand it to Ghostscript)"
    if h[:5].lower() in (b"<?xml", b"<svg ") or b"<svg" in head[:1024].lower():
        return "SVG (vector XML)"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        name = {"heic": "HEIC", "heix": "HEIC", "mif1": "HEIF", "msf1": "HEIF", "avif": "AVIF"}.get(brand, "ISO-BMFF")
        return f"{name} (brand {brand!r}; not readable by Pillow without a plugin)"
    if head[:5] == b"%PDF-":
        return "PDF"
    if head[:4] in (b"PK\x03\x04",):
        return "ZIP archive"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


@contextlib.contextmanager
def pixel_limit(max_pixels: int):
    """Pillow's bomb guard at our limit, for the duration of a check, restoring the global after.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that *inside* ``Image.open``; we make
    both exceptions (caught per file) and also compare width x height ourselves before decoding.
    """
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt-EXIF chatter and the like: the result says enough
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def check_image(path: str, max_pixels: int, min_side: int, fixed_dir: str | None,
                max_bytes: int = MAX_IMAGE_BYTES) -> ImageResult:
    """Check one file; write its upright RGB copy into ``fixed_dir`` if it needs fixing (None: don't).
    Only a regular file of at most ``max_bytes`` is read (``/dev/zero`` is a row problem, not a hang)."""
    res = ImageResult(path=path)
    try:
        data = read_image_bytes(path, max_bytes)
    except ImageFileError as e:
        return _bad(res, e.kind, e.reason)
    if not data:
        return _bad(res, ZERO_BYTE, "file is empty (0 bytes)")
    res.sha256 = hashlib.sha256(data).hexdigest()
    with pixel_limit(max_pixels):
        _decode(res, data, max_pixels, min_side, fixed_dir)
    return res


def _bad(res: ImageResult, kind: str, message: str) -> ImageResult:
    res.problem, res.message = kind, message
    return res


def _decode(res: ImageResult, data: bytes, max_pixels: int, min_side: int, fixed_dir: str | None) -> None:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        # formats=: only the decoders we list may run (an EPS renamed .jpg must never reach Ghostscript)
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        _bad(res, UNSUPPORTED_FORMAT, f"content is {sniff(data[:2048])}, not one of the image formats read "
                                      f"({', '.join(IMAGE_FORMATS)})")
        return
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        _bad(res, DECOMPRESSION_BOMB, _bomb_message(e, max_pixels))
        return
    except Exception as e:  # noqa: BLE001 - a broken header can raise anything from a plugin
        _bad(res, CORRUPT_IMAGE, f"header unreadable: {type(e).__name__}: {e}")
        return
    w, h = img.size
    res.size, res.mode, res.format = (w, h), img.mode, img.format
    if w * h > max_pixels:
        _bad(res, DECOMPRESSION_BOMB, f"{w}x{h} = {w * h:,} pixels > limit {max_pixels:,}")
        return
    if min(w, h) < min_side:
        _bad(res, TINY_IMAGE, f"{w}x{h} is under {min_side} px on a side")
        return
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: the pixels may still be fine
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    if orientation != 1:
        res.fixes.append((EXIF_ORIENTATION, f"EXIF orientation {orientation}: stored {w}x{h}, rotated upright"))
    if img.mode != "RGB":
        kind = MODE_KINDS.get(img.mode, MODE_OTHER)
        extra = " with transparency" if img.mode == "P" and "transparency" in img.info else ""
        res.fixes.append((kind, f"mode {img.mode}{extra} converted to RGB"))
    try:
        if not res.fixes and img.format == "JPEG":
            # Nothing to write: decode at 1/8 scale, which still reads every byte (a truncated stream
            # still fails) at a fraction of the cost for 12-megapixel phone photos.
            img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        _bad(res, DECOMPRESSION_BOMB, _bomb_message(e, max_pixels))
        return
    except Exception as e:  # noqa: BLE001 - truncated, bad CRC, broken Huffman table...
        _bad(res, CORRUPT_IMAGE, f"cannot decode: {type(e).__name__}: {e}")
        return
    if res.fixes and fixed_dir is not None:
        try:
            res.fixed_path = _write_fixed(img, res, Path(fixed_dir))
        except Exception as e:  # noqa: BLE001 - e.g. a mode Pillow can decode but not convert
            _bad(res, CORRUPT_IMAGE, f"cannot convert to upright RGB: {type(e).__name__}: {e}")


def _bomb_message(e: Exception, max_pixels: int) -> str:
    """Pillow's message names its own (doubled) limit; restate it with ours."""
    import re

    m = re.search(r"\((\d+) pixels\)", str(e))
    declared = f"{int(m.group(1)):,} pixels" if m else "declared size"
    return f"{declared} > limit {max_pixels:,} (Pillow refused to open it)"


def _write_fixed(img, res: ImageResult, fixed_dir: Path) -> str:
    """Upright RGB copy named by the source's content hash (so workers never collide and reruns reuse it)."""
    from PIL import ImageOps

    from lugha.preprocess import to_rgb

    lossy = res.format in LOSSY_FORMATS
    out = fixed_dir / f"{res.sha256[:24]}.{'jpg' if lossy else 'png'}"
    if out.exists():
        return str(out)
    rgb = to_rgb(ImageOps.exif_transpose(img))
    with atomic_path(out) as tmp:  # two rows of the same image in two workers leave one whole file
        if lossy:
            rgb.save(tmp, "JPEG", quality=95, subsampling=0)  # one re-encode, as close to the source as JPEG gets
        else:
            rgb.save(tmp, "PNG")
    return str(out)


def _check_image_args(args: tuple) -> ImageResult:
    return check_image(*args)


def check_images(paths: list[str], max_pixels: int, min_side: int, fixed_dir: str | None,
                 workers: int = 0, max_bytes: int = MAX_IMAGE_BYTES) -> list[ImageResult]:
    """:func:`check_image` over ``paths`` in a process pool (``workers`` 0: min(4, CPUs); 1: in process).

    ``imap`` returns results in task order, so the outcome never depends on the worker count.
    """
    import multiprocessing

    from lugha.progress import progress

    tasks = [(p, max_pixels, min_side, fixed_dir, max_bytes) for p in paths]
    n = max(1, min(workers or min(4, os.cpu_count() or 1), len(tasks)))
    if n == 1:
        return list(progress(map(_check_image_args, tasks), total=len(tasks), desc="checking images"))
    with multiprocessing.get_context().Pool(n) as pool:
        it = pool.imap(_check_image_args, tasks, chunksize=max(1, min(16, len(tasks) // (n * 4))))
        return list(progress(it, total=len(tasks), desc=f"checking images ({n} workers)"))


__all__ = ["ImageResult", "check_image", "check_images", "sniff", "pixel_limit", "MODE_KINDS"]
