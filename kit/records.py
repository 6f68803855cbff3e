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
from lugha.errors import ConfigError, DataError

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


def parse_record(line: str, where: str) -> Record:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        return from_dict(Record, data, "record")
    except ConfigError as e:
        raise DataError(f"{where}: {e}") from None


def iter_manifest(path: str | os.PathLike) -> Iterator[Record]:
    """Records of a JSONL manifest; a bad line raises :class:`DataError` naming file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield parse_record(line, f"{path}:{lineno}")


def read_manifest(path: str | os.PathLike) -> list[Record]:
    return list(iter_manifest(path))


def write_manifest(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Write atomically (temp file then rename) so an interrupted import never leaves half a manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
            n += 1
    os.replace(tmp, path)
    return n
