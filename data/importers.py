"""Dataset importers: the shared rules every format follows, and the registry of formats.

Each format lives in its own module (``import_json``: coco, xm3600, karpathy; ``import_text``: flickr,
multi30k; ``import_files``: folder, csv) and builds its records through one :class:`RecordBuilder`, so
the rules hold for all of them:

- text is NFC-normalised with whitespace collapsed (a caption is one line; ``é`` typed two ways must
  tokenize the same); empty captions are skipped and reported;
- languages go through :mod:`lugha.langcodes`; unknown codes fail the import, all listed at once;
- ``group`` is the image (its path under the images folder), so a split never separates the captions
  of one image, and the same image imported from two datasets lands in the same group;
- image paths are written relative to the manifest's folder, so the dataset folder can be moved whole;
- rows whose image file is missing are skipped and reported (``check_images=False`` keeps them);
- ids are stable (derived from the source's own ids or line numbers) and must be unique.
"""
from __future__ import annotations

import importlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lugha.errors import DataError
from lugha.jsonl import read_text_lines as _read_text_lines, unicode_problem
from lugha.langcodes import LangNormalizer, language_name
from lugha.records import SPLITS, Record

# format name -> (module, function); modules are imported on use so `lugha --help` stays instant.
IMPORTERS: dict[str, tuple[str, str]] = {
    "coco": ("import_json", "import_coco"),
    "karpathy": ("import_json", "import_karpathy"),
    "xm3600": ("import_json", "import_xm3600"),
    "flickr": ("import_text", "import_flickr"),
    "multi30k": ("import_text", "import_multi30k"),
    "folder": ("import_files", "import_folder"),
    "csv": ("import_files", "import_csv"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Spellings of split names seen in the wild -> the manifest's three.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "restval": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "": "",
}


def get_importer(fmt: str) -> Callable[..., "ImportResult"]:
    if fmt not in IMPORTERS:
        raise DataError(f"unknown import format {fmt!r}; known: {', '.join(IMPORTERS)}")
    module, func = IMPORTERS[fmt]
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


def clean_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def normalize_split(value: str, where: str) -> str:
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: unknown split {value!r}; use one of {', '.join(SPLITS)} (or leave it empty)")
    return split


@dataclass
class ImportOptions:
    """Options every format shares. ``manifest_dir``: the folder the manifest will be written to (image
    paths are made relative to it; ``None`` writes absolute paths). ``split``: set on every record."""

    manifest_dir: str | os.PathLike | None = None
    id_prefix: str | None = None
    split: str = ""
    check_images: bool = True
    allow_outside: bool = False  # True: image names may be absolute or climb out of the images folder


@dataclass
class ImportResult:
    format: str
    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)

    def language_counts(self) -> list[dict]:
        return language_counts(self.records)

    def summary(self) -> dict:
        return {
            "format": self.format,
            "records": len(self.records),
            "images": len({r.group_key for r in self.records}),
            "languages": self.language_counts(),
            "skipped": len(self.skipped),
            "skipped_examples": [{"where": w, "why": y} for w, y in self.skipped[:20]],
        }


def language_counts(records: list[Record]) -> list[dict]:
    """One row per language: captions and distinct images, most captions first."""
    caps: dict[str, int] = {}
    imgs: dict[str, set] = {}
    for r in records:
        caps[r.lang] = caps.get(r.lang, 0) + 1
        imgs.setdefault(r.lang, set()).add(r.group_key)
    order = sorted(caps, key=lambda lang: (-caps[lang], lang))
    return [{"lang": lang, "language": language_name(lang), "captions": caps[lang], "images": len(imgs[lang])}
            for lang in order]


class RecordBuilder:
    """Collects one import's records, applying the module's rules; :meth:`finish` raises what it found."""

    MAX_LISTED = 10

    def __init__(self, fmt: str, options: ImportOptions | None = None, images_root: str | os.PathLike | None = None):
        opts = options or ImportOptions()
        # Image names come from the caption file: unless allowed, each must stay inside the images folder.
        self.images_root = None if images_root is None or opts.allow_outside else os.path.abspath(images_root)
        self.format = fmt
        self.prefix = fmt if opts.id_prefix is None else opts.id_prefix
        self.split = normalize_split(opts.split, "--split")
        self.check_images = opts.check_images
        # abspath, not resolve(): symlinks are left alone on both sides, so relpath stays short
        self.base = Path(os.path.abspath(opts.manifest_dir)) if opts.manifest_dir is not None else None
        self.langs = LangNormalizer()
        self.records: list[Record] = []
        self.skipped: list[tuple[str, str]] = []
        self._ids: dict[str, str] = {}
        self._dupes: list[str] = []
        self._images: dict[Path, str | None] = {}  # resolved image -> manifest path, or None if missing
        self._missing: list[Path] = []

    def make_id(self, *parts: object) -> str:
        return "-".join(str(p) for p in ((self.prefix,) if self.prefix else ()) + parts)

    def skip(self, where: str, why: str) -> None:
        self.skipped.append((where, why))

    def image_ref(self, image: Path) -> str | None:
        """The manifest's path for ``image`` (relative to the manifest folder when it can be), or
        ``None`` when the file is missing and images are checked."""
        if image not in self._images:
            absolute = Path(os.path.abspath(image))
            ref = absolute.as_posix()
            if self.base is not None:
                try:  # on Windows, another drive cannot be reached relatively: keep it absolute
                    ref = Path(os.path.relpath(absolute, self.base)).as_posix()
                except ValueError:
                    pass
            if self.check_images and not absolute.is_file():
                self._missing.append(absolute)
                ref = None
            self._images[image] = ref
        return self._images[image]

    def add(self, *, id: str, image: Path, text: str, lang: str, where: str, group: str,
            label: str | None = None, split: str | None = None, meta: dict | None = None) -> Record | None:
        tag = self.langs(lang, where)
        text = clean_text(text) if isinstance(text, str) else ""
        if not text:
            self.skip(where, "empty caption")
            return None
        bad = unicode_problem({"id": id, "text": text, "image": str(image), "group": group, "label": label})
        if bad:  # valid JSON, but no UTF-8 manifest can hold it
            self.skip(where, f"invalid Unicode: {bad} is a lone surrogate")
            return None
        if self.images_root is not None and not _inside(self.images_root, image):
            self.skip(where, f"image path {str(image)!r} leaves the images folder {self.images_root} "
                             "(absolute or '..'); pass --allow-outside if the captions file is yours")
            return None
        ref = self.image_ref(image)
        if ref is None:
            self.skip(where, f"image not found: {image}")
            return None
        if id in self._ids:
            self._dupes.append(f"{id!r} at {self._ids[id]} and {where}")
        self._ids[id] = where
        if tag is None:
            return None  # reported by finish(), with every other unknown code
        record = Record(id=id, image=ref, text=text, lang=tag, split=self.split if split is None else split,
                        label=label, group=group, meta=dict(meta or {}))
        self.records.append(record)
        return record

    def finish(self) -> ImportResult:
        self.langs.check()
        if self._dupes:
            more = len(self._dupes) - self.MAX_LISTED
            raise DataError(f"{len(self._dupes)} duplicate record id(s): " + "; ".join(self._dupes[: self.MAX_LISTED])
                            + (f" and {more} more" if more > 0 else ""))
        if not self.records and self._missing:
            raise DataError(f"none of the {len(self._missing)} image(s) were found (first: {self._missing[0]}); "
                            "is the images folder right?")
        if not self.records:
            raise DataError(f"{self.format}: no records imported" + (
                f" ({len(self.skipped)} skipped, first: {self.skipped[0][0]}: {self.skipped[0][1]})"
                if self.skipped else " (the input is empty)"))
        return ImportResult(self.format, self.records, self.skipped)


def _inside(root: str, image: os.PathLike | str) -> bool:
    """True when ``image`` (as written, ``..`` resolved by text) lies in ``root``."""
    path = os.path.normpath(os.path.abspath(image))
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:  # another drive on Windows
        return False


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` too, as Multi30k ships them: streamed, with a cap on the
    inflated size, never read whole), without line ends."""
    return _read_text_lines(path)


def require_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{what} {p}: not a folder")
    return p


__all__ = [
    "IMPORTERS", "get_importer", "ImportOptions", "ImportResult", "RecordBuilder", "clean_text",
    "language_counts", "normalize_split", "read_text_lines", "IMAGE_EXTENSIONS",
]
