"""Opening image files named by data we did not write: only regular files, only so many bytes, only the
decoders we list.

A manifest or an importer's caption file names image paths; whoever wrote it chose them. So:

* ``/dev/zero`` or a FIFO would hang a worker or fill memory: only regular files are read (checked on the
  open descriptor, so a path swapped for a FIFO between a check and the open cannot slip through, and
  ``O_NONBLOCK`` keeps the open itself from waiting for a writer);
* a file is read up to ``max_bytes`` and no further;
* Pillow picks a decoder from the bytes, among every plugin it has, unless told otherwise: a ``.jpg`` that
  is really EPS would reach Ghostscript. :data:`IMAGE_FORMATS` is the allowlist every ``Image.open`` on
  such a file passes as ``formats=``.
"""
from __future__ import annotations

import io
import os
import stat

from lugha.errors import DataError

# Photos and the formats datasets ship (JPEG also opens phones' MPO files). Never EPS/PS (Ghostscript), PDF.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_IMAGE_BYTES = 128 << 20  # 128 MiB: a 50 MP phone JPEG is ~20 MB, a 16-bit TIFF scan can be ~100 MB

# Kind ids (lugha.data.check reports them per row)
MISSING_FILE = "missing_file"
UNREADABLE_FILE = "unreadable_file"
NOT_REGULAR_FILE = "not_regular_file"
FILE_TOO_LARGE = "file_too_large"


class ImageFileError(DataError):
    """An image path that cannot be read as a file. ``kind`` is one of the kind ids above."""

    def __init__(self, kind: str, path: str, message: str):
        self.kind = kind
        super().__init__(f"{path}: {message}")
        self.reason = message


def read_image_bytes(path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`ImageFileError` otherwise."""
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise ImageFileError(MISSING_FILE, name, "file does not exist") from None
    except OSError as e:  # a folder on Windows, no permission, an I/O error on a failing SD card
        raise ImageFileError(UNREADABLE_FILE, name, f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageFileError(UNREADABLE_FILE, name, "cannot read: is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError(NOT_REGULAR_FILE, name, "not a regular file (a device, FIFO or socket); refused")
        if st.st_size > max_bytes:
            raise ImageFileError(FILE_TOO_LARGE, name, f"{st.st_size:,} bytes > limit {max_bytes:,}")
        chunks, left = [], max_bytes + 1  # +1: a file that grew past the limit since fstat is still caught
        while left > 0:
            try:
                chunk = os.read(fd, min(left, 1 << 20))
            except OSError as e:
                raise ImageFileError(UNREADABLE_FILE, name, f"cannot read: {e.strerror or e}") from None
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ImageFileError(FILE_TOO_LARGE, name, f"more than {max_bytes:,} bytes (grew while read)")
        return data
    finally:
        os.close(fd)


def open_image(path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES):
    """A lazily decoded ``PIL.Image`` of a file, read by :func:`read_image_bytes`, decoded only by one
    of :data:`IMAGE_FORMATS`. Use as ``with open_image(p) as im:``."""
    from PIL import Image

    return Image.open(io.BytesIO(read_image_bytes(path, max_bytes)), formats=IMAGE_FORMATS)


__all__ = ["IMAGE_FORMATS", "MAX_IMAGE_BYTES", "ImageFileError", "open_image", "read_image_bytes"]
