"""The dataset manifest: one JSON object per line, one image-text pair per object.

``image`` is relative to the manifest's folder (or absolute), so a dataset folder can be copied to a Pi
as a whole. ``group`` names the unit that must never straddle splits (the image by default; the emoji
in the demo data, whose one image is captioned in many languages).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from lugha._schema import from_dict, to_dict
from lugha.atomic import atomic_write
from lugha.errors import ConfigError, DataError
from lugha.jsonl import iter_jsonl, parse_line, unicode_problem

Split = Literal["train", "val", "test", ""]
SPLITS = ("train", "val", "test")


@dataclass
class Record:
    id: str
    image: str
    text: str
    lang: str
    split: Split = ""
    label: str | None = None  # classification label (CLDR group in the demo data)
    subgroup: str | None = None  # finer label (CLDR subgroup in the demo data)
    group: str | None = None  # split unit; defaults to the image path
    keywords: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> str:
        return self.group or self.image

    def image_path(self, root: str | os.PathLike) -> Path:
        p = Path(self.image)
        return p if p.is_absolute() else Path(root) / p

    def to_json(self) -> str:
        d = {k: v for k, v in to_dict(self).items() if v not in (None, [], {}, "") or k in ("text", "split")}
        return json.dumps(d, ensure_ascii=False)


def parse_record(line: str | bytes, where: str) -> Record:
    """One manifest line as a :class:`Record`; any problem (bad JSON, nesting that would crash the parser,
    a lone surrogate, a bad field) is a :class:`DataError` naming ``where``."""
    parsed = parse_line(0, line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line)
    if parsed.kind is not None:
        raise DataError(f"{where}: {parsed.kind}: {parsed.message}")
    try:
        return from_dict(Record, parsed.data, "record")
    except ConfigError as e:
        raise DataError(f"{where}: {e}") from None


def iter_manifest(path: str | os.PathLike) -> Iterator[Record]:
    """Records of a JSONL manifest (``.gz`` too); a bad line raises :class:`DataError` naming file and
    line (``lugha data check`` reports every bad line instead of stopping at the first)."""
    for line in iter_jsonl(path):
        if line.kind is not None:
            raise DataError(f"{path}:{line.lineno}: {line.kind}: {line.message}")
        try:
            yield from_dict(Record, line.data, "record")
        except ConfigError as e:
            raise DataError(f"{path}:{line.lineno}: {e}") from None


def read_manifest(path: str | os.PathLike) -> list[Record]:
    return list(iter_manifest(path))


def write_manifest(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Write atomically (unique temp file, fsync, rename) so an interrupted import never leaves half a
    manifest. A record UTF-8 cannot hold (a lone surrogate) is a :class:`DataError` naming its id, and
    the previous manifest, if any, is left as it was."""
    n = 0
    with atomic_write(path) as f:
        for r in records:
            line = r.to_json()
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{path}: record {r.id!r}: {unicode_problem(to_dict(r))} is a lone surrogate, "
                                "not a character; nothing written") from None
            f.write(line + "\n")
            n += 1
    return n
