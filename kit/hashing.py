"""File hashing for bundle manifests: SHA-256 read in chunks, so a 300 MB graph never sits in memory."""
from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20  # 1 MiB: large enough to be fast, small enough for a Pi with 512 MB of RAM


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
