"""Line-based caption formats: the Flickr8k/30k caption files and Multi30k's aligned text files."""
from __future__ import annotations

import os
import re
from pathlib import Path

from lugha.errors import DataError
from lugha.progress import progress
from lugha.data.importers import ImportOptions, ImportResult, RecordBuilder, read_text_lines, require_dir
from lugha.langcodes import UnknownLanguageError, normalize_lang

_TOKEN_LINE = re.compile(r"^(?P<image>[^\t#]+)#(?P<n>\d+)\s+(?P<text>.*)$")
_RECOVER_NUMBER = re.compile(r"^\s*(?P<n>\d+)\s+(?P<text>.*)$")


def detect_flickr(first_line: str) -> str:
    """Which Flickr caption file a first line belongs to: ``token`` (Flickr8k.token.txt and Flickr30k
    results_20130124.token: ``x.jpg#0<TAB>caption``), ``pipe`` (Flickr30k results.csv:
    ``image_name| comment_number| comment``) or ``kaggle`` (Kaggle Flickr8k captions.txt:
    ``image,caption``); ``""`` if none."""
    head = first_line.lstrip("\ufeff").strip()
    if _TOKEN_LINE.match(head):
        return "token"
    cols = [c.strip().lower() for c in head.split("|")]
    if cols[:3] == ["image_name", "comment_number", "comment"]:
        return "pipe"
    if [c.strip().lower() for c in head.split(",")] == ["image", "caption"]:
        return "kaggle"
    return ""


def _flickr_rows(lines: list[str], kind: str, name: str):
    """(where, image, caption number, text) per line; unparseable lines as (where, None, None, why)."""
    counters: dict[str, int] = {}
    start = 1 if kind in ("pipe", "kaggle") else 0  # skip the header
    for lineno, line in enumerate(lines[start:], start + 1):
        where = f"{name}:{lineno}"
        if not line.strip():
            continue
        if kind == "token":
            m = _TOKEN_LINE.match(line.strip())
            if not m:
                yield where, None, None, "not 'image.jpg#N<TAB>caption'"
                continue
            yield where, m["image"].strip(), int(m["n"]), m["text"]
        elif kind == "pipe":
            cols = line.split("|", 2)
            if len(cols) == 2:
                # Flickr30k's results.csv has a row whose second '|' is missing ("x.jpg| 4 A dog ..."):
                # the number and caption are still there, so recover them instead of dropping the row.
                m = _RECOVER_NUMBER.match(cols[1])
                if m:
                    cols = [cols[0], m["n"], m["text"]]
            if len(cols) != 3 or not cols[1].strip().isdigit():
                yield where, None, None, "not 'image_name| comment_number| comment'"
                continue
            yield where, cols[0].strip(), int(cols[1]), cols[2]
        else:  # kaggle: captions may contain commas, and are quoted when they do
            image, sep, text = line.partition(",")
            if not sep:
                yield where, None, None, "not 'image,caption'"
                continue
            text = text.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1].replace('""', '"')
            n = counters.get(image, 0)  # this format has no caption numbers: number them in file order
            counters[image] = n + 1
            yield where, image.strip(), n, text


def import_flickr(captions: str | os.PathLike, images: str | os.PathLike, lang: str = "en",
                  options: ImportOptions | None = None) -> ImportResult:
    """Flickr8k ``Flickr8k.token.txt``, Flickr30k ``results_20130124.token`` or ``results.csv``, or the
    Kaggle ``captions.txt`` (detected from the first line). Id: ``flickr-<image stem>-<caption number>``."""
    path, root = Path(captions), require_dir(images, "--images")
    lines = read_text_lines(path)
    first = next((ln for ln in lines if ln.strip()), "")
    kind = detect_flickr(first)
    if not kind:
        raise DataError(f"{path}: not a Flickr caption file (first line {first[:60]!r}; expected "
                        "'x.jpg#0<TAB>caption', 'image_name| comment_number| comment' or 'image,caption')")
    b = RecordBuilder("flickr", options, root)
    for where, image, n, text in progress(_flickr_rows(lines, kind, path.name), total=len(lines), desc="flickr"):
        if image is None:
            b.skip(where, text)
            continue
        b.add(id=b.make_id(Path(image).stem, n), image=root / image, text=text, lang=lang, where=where,
              group=image, meta={"caption_number": n})
    return b.finish()


def _stem_and_lang(path: Path) -> tuple[str, str]:
    """``train.de`` -> (``train``, ``de``); ``test_2016_flickr.cs.gz`` -> (``test_2016_flickr``, ``cs``)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem, dot, code = name.rpartition(".")
    if not dot or not stem:
        raise DataError(f"{path}: cannot tell its language; Multi30k files are named STEM.LANG (train.de)")
    try:
        return stem, normalize_lang(code, str(path))
    except UnknownLanguageError:
        raise DataError(f"{path}: cannot tell its language ({code!r} is not a language code); Multi30k files "
                        "are named STEM.LANG (train.de)") from None


def _split_from_stem(stem: str) -> str:
    """Multi30k's own split names: train, val, test_2016_flickr, test_2017_mscoco, ..."""
    head = stem.split(".")[0].split("_")[0].lower()
    return {"train": "train", "val": "val", "valid": "val", "dev": "val", "test": "test"}.get(head, "")


def import_multi30k(texts: list[str | os.PathLike], image_list: str | os.PathLike, images: str | os.PathLike,
                    options: ImportOptions | None = None) -> ImportResult:
    """Multi30k: per-language files ``STEM.LANG`` (one caption per line) aligned line by line with an
    image list (``train_images.txt``: one file name per line). The split comes from the stem (train,
    val, test_*) unless ``options.split`` is set. Id: ``multi30k-<stem>-<line>-<lang>``."""
    if not texts:
        raise DataError("multi30k: give at least one caption file (train.en, train.de, ...)")
    root, list_path = require_dir(images, "--images"), Path(image_list)
    names = [ln.strip() for ln in read_text_lines(list_path)]
    while names and not names[-1]:
        names.pop()
    files = []
    for t in texts:
        p = Path(t)
        lines = read_text_lines(p)
        while len(lines) > len(names) and not lines[-1].strip():
            lines.pop()  # a stray blank line at the end is not a caption
        files.append((p, *_stem_and_lang(p), lines))
    bad = [f"{p.name} has {len(lines)}" for p, _, _, lines in files if len(lines) != len(names)]
    if bad:
        raise DataError(f"line counts differ: {list_path.name} has {len(names)} lines but " + ", ".join(bad)
                        + " (the files must be aligned line by line)")
    b = RecordBuilder("multi30k", options, root)
    total = len(names) * len(files)
    rows = ((p, stem, lang, i, name, lines[i]) for p, stem, lang, lines in files for i, name in enumerate(names))
    for p, stem, lang, i, name, text in progress(rows, total=total, desc="multi30k"):
        where = f"{p.name}:{i + 1}"
        if not name:
            b.skip(where, f"{list_path.name}:{i + 1} names no image")
            continue
        b.add(id=b.make_id(stem, i + 1, lang), image=root / name, text=text, lang=lang, where=where,
              group=name, split=b.split or _split_from_stem(stem))
    return b.finish()
