"""A dependency-free progress bar for kit code (tqdm is a training extra; the kit must run on a Pi).

Writes to stderr only when it is a terminal, or always with ``LUGHA_PROGRESS=1``; a final summary line
is printed either way so logs show the work was done.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every: float = 0.2) -> Iterator[T]:
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    live = sys.stderr.isatty() or os.environ.get("LUGHA_PROGRESS") == "1"
    start = last = time.monotonic()
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if live and now - last >= every:
            last = now
            rate = n / max(now - start, 1e-9)
            frac = f"{n}/{total}" if total else f"{n}"
            sys.stderr.write(f"\r{desc}: {frac} ({rate:.0f}/s)")
            sys.stderr.flush()
    elapsed = time.monotonic() - start
    if live or n:
        sys.stderr.write(("\r" if live else "") + f"{desc}: {n} done in {elapsed:.1f}s\n")
