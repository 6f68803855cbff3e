"""Reading JSON Lines (and line-based text) that may be hostile: every bad line a named problem, no crash.

One reader for every JSONL input (dataset manifests, ``lugha data check``, the importers), so each
treats the same inputs the same way:

* a line is read with a cap (:data:`MAX_LINE_BYTES`): a 2 GB line without a newline costs the cap, not
  the memory of the machine, and becomes a ``line_too_long`` problem; the lines after it still count;
* ``.gz`` files are decompressed as a stream, and a file that inflates past :data:`MAX_DECOMPRESSED_BYTES`
  is refused (a gzip bomb), never read whole;
* a parse problem is a kind, not an exception: ``invalid_utf8`` (bytes), ``bad_json`` (syntax, or not an
  object), ``malformed_json`` (valid in principle, but nested too deep for the parser:
  ``[[[[...`` 100,000 deep raises ``RecursionError`` inside :mod:`json`), ``invalid_unicode`` (valid JSON
  whose strings hold a lone surrogate such as ``"\\ud800"``, which no UTF-8 file can hold: writing it
  back would raise ``UnicodeEncodeError``).
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from lugha.errors import DataError

MAX_LINE_BYTES = 1 << 20  # 1 MiB: a manifest row is ~200 bytes, a COCO-style caption line a few kB
MAX_DECOMPRESSED_BYTES = 4 << 30  # 4 GiB: Multi30k/Flickr files inflate to MBs; a bomb to far more
MAX_DEPTH = 64  # deeper JSON than any manifest needs; well under the interpreter's recursion limit

# kind -> what it means (lugha.data.check lists them with their severity)
LINE_KINDS = {
    "invalid_utf8": "manifest line is not valid UTF-8",
    "bad_json": "manifest line is not a JSON object",
    "malformed_json": "JSON nested deeper than the reader allows (a parser-crashing line)",
    "invalid_unicode": "a string holds a lone surrogate escape (valid JSON, not encodable Unicode)",
    "line_too_long": "line longer than the line cap",
}


@dataclass
class Line:
    """One non-blank line: ``data`` when it parsed, else ``kind``/``message`` and the ``raw`` text."""

    lineno: int
    data: Any = None
    kind: str | None = None
    message: str = ""
    raw: str | None = None  # the line as text (undecodable bytes backslash-escaped), when not parsed


class _Capped:
    """A binary stream that refuses to yield more than ``limit`` bytes (the decompressed size of a .gz)."""

    def __init__(self, f: IO[bytes], limit: int, name: str):
        self.f, self.left, self.name, self.limit = f, limit, name, limit

    def readline(self, size: int) -> bytes:
        got = self.f.readline(min(size, self.left + 1))
        self.left -= len(got)
        if self.left < 0:
            raise DataError(f"{self.name}: decompresses to more than {self.limit:,} bytes; refused "
                            "(a gzip bomb, or pass a smaller file)")
        return got


def open_binary(path: str | os.PathLike, max_decompressed: int | None = None):
    """``path`` opened for streaming bytes: ``.gz`` decompressed on the fly (capped at ``max_decompressed``,
    default :data:`MAX_DECOMPRESSED_BYTES`), else as is."""
    p = Path(path)
    max_decompressed = MAX_DECOMPRESSED_BYTES if max_decompressed is None else max_decompressed
    try:
        if p.suffix == ".gz":
            return _CappedFile(gzip.open(p, "rb"), max_decompressed, str(p))
        return open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: a folder, not a file") from None


class _CappedFile(_Capped):
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def iter_raw_lines(f, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes without the line end)``; ``None`` for a line over the cap (its rest is read
    and dropped in chunks, so the next line keeps its number and nothing big is held)."""
    lineno = 0
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(1 << 16)
            yield lineno, None
            continue
        yield lineno, raw.rstrip(b"\r\n")


def _depth_ok(text: str, limit: int) -> bool:
    """True unless brackets nest deeper than ``limit`` outside strings (checked before json.loads, which
    would recurse once per level)."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def unicode_problem(value: Any, where: str = "") -> str | None:
    """The dotted path of the first string (key or value) in ``value`` that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"{where or 'value'} (character {e.start}: {value[e.start]!r})"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            bad = unicode_problem(k, f"{where}.<key>" if where else "<key>") or \
                unicode_problem(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad = unicode_problem(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


def parse_line(lineno: int, raw: bytes | None, max_line_bytes: int = MAX_LINE_BYTES,
               max_depth: int = MAX_DEPTH) -> Line:
    """One line's JSON object, or the kind of problem it has (never raises)."""
    if raw is None:
        return Line(lineno, kind="line_too_long", message=f"line is longer than {max_line_bytes:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Line(lineno, kind="invalid_utf8", raw=raw.decode("utf-8", "backslashreplace"),
                    message=f"byte {e.start} ({raw[e.start:e.start + 1]!r}) is not valid UTF-8")
    if text.count("[") + text.count("{") > max_depth and not _depth_ok(text, max_depth):
        return Line(lineno, kind="malformed_json", raw=text,
                    message=f"JSON nested more than {max_depth} levels deep")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return Line(lineno, kind="bad_json", raw=text, message=f"not valid JSON ({e.msg} at column {e.colno})")
    except RecursionError:  # belt and braces: _depth_ok should have stopped it
        return Line(lineno, kind="malformed_json", raw=text, message="JSON nested too deep to parse")
    if not isinstance(data, dict):
        return Line(lineno, kind="bad_json", raw=text, message=f"a JSON {type(data).__name__}, not an object")
    bad = unicode_problem(data)
    if bad:
        # raw keeps the line as written (the escape is ASCII there), so the skip list can hold it
        return Line(lineno, data=None, kind="invalid_unicode", raw=text,
                    message=f"{bad} is a lone surrogate escape, not a character")
    return Line(lineno, data=data)


def iter_jsonl(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Every non-blank line of a JSONL file (``.gz`` too), parsed or with its problem. A UTF-8 byte-order
    mark on the first line is dropped (Windows editors write one)."""
    with open_binary(path) as f:
        for lineno, raw in iter_raw_lines(f, max_line_bytes):
            if lineno == 1 and raw is not None and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw is not None and not raw.strip():
                continue
            yield parse_line(lineno, raw, max_line_bytes)


def read_text_lines(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` streamed and capped), without line ends; a byte-order mark
    dropped. Raises :class:`DataError` naming the line for an over-long or undecodable one."""
    out = []
    with open_binary(path) as f:
        for lineno, raw in iter_raw_lines(f, max_line_bytes):
            if raw is None:
                raise DataError(f"{path}:{lineno}: line longer than {max_line_bytes:,} bytes")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start})") from None
    return out


__all__ = ["LINE_KINDS", "Line", "MAX_LINE_BYTES", "MAX_DECOMPRESSED_BYTES", "iter_jsonl", "iter_raw_lines",
           "open_binary", "parse_line", "read_text_lines", "unicode_problem"]
