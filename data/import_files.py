"""Formats people make themselves: an image folder with sidecar captions, and a CSV/TSV table."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from lugha.errors import DataError
from lugha.progress import progress
from lugha.data.importers import (IMAGE_EXTENSIONS, ImportOptions, ImportResult, RecordBuilder, normalize_split,
                        read_text_lines)
from lugha.langcodes import UnknownLanguageError, normalize_lang


def _folder_images(root: Path):
    """(folder, image file names, all file names) per folder under ``root``, in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = sorted(f for f in files if not f.startswith("."))
        yield Path(folder), [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)], files


def _sidecars(stem: str, files: list[str], image_stems: set[str]) -> list[tuple[str | None, str]]:
    """Caption files of the image ``stem``: ``stem.txt`` (language None) and ``stem.<lang>.txt``."""
    out: list[tuple[str | None, str]] = []
    for f in files:
        if f == f"{stem}.txt":
            out.append((None, f))
        elif f.startswith(stem + ".") and f.endswith(".txt"):
            middle = f[len(stem) + 1:-4]
            # "a.b.txt" belongs to the image "a.b.jpg" when there is one, not to "a.jpg" in language "b"
            if middle and "." not in middle and f"{stem}.{middle}" not in image_stems:
                out.append((middle, f))
    return out


def _canonical(code: str) -> str:
    try:
        return normalize_lang(code)
    except UnknownLanguageError:
        return code  # the builder reports it, with every other unknown code


def import_folder(folder: str | os.PathLike, lang: str | None = None, label_from_folder: bool = False,
                  options: ImportOptions | None = None) -> ImportResult:
    """An image folder (searched recursively) with sidecar captions: ``x.jpg`` + ``x.txt`` (in ``lang``)
    and/or ``x.<lang>.txt``, one caption per line. ``label_from_folder``: the sub-folder name becomes
    the record's label (``cats/x.jpg`` -> ``cats``). Id: ``folder-<path without extension>-<lang>-<n>``."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    b = RecordBuilder("folder", options, root)
    listing = list(_folder_images(root))
    total = sum(len(images) for _, images, _ in listing)
    pairs = ((d, image, images, files) for d, images, files in listing for image in images)
    stems: dict[Path, dict[str, list[str]]] = {}
    for d, image, images, files in progress(pairs, total=total, desc="folder"):
        if d not in stems:
            stems = {d: {}}  # one folder at a time: keep only the current one's map
            for i in images:
                stems[d].setdefault(Path(i).stem, []).append(i)
        stem = Path(image).stem
        rel = (d / image).relative_to(root).as_posix()
        sidecars = _sidecars(stem, files, set(stems[d]))
        if len(stems[d][stem]) > 1 and sidecars:
            a, c = stems[d][stem][:2]
            raise DataError(f"{d / a} and {d / c} would share the captions {sidecars[0][1]}; rename one")
        if not sidecars:
            b.skip(rel, f"no caption file ({stem}.txt or {stem}.<lang>.txt)")
            continue
        rel_stem = rel.rsplit(".", 1)[0]
        label = d.relative_to(root).as_posix() if label_from_folder and d != root else None
        for code, name in sidecars:
            if code is None and lang is None:
                raise DataError(f"{d / name}: no language in its name; pass --lang for plain .txt captions "
                                f"or rename it {stem}.LANG.txt")
            code = lang if code is None else code
            where = (d / name).relative_to(root).as_posix()
            captions = [(i, ln) for i, ln in enumerate(read_text_lines(d / name), 1) if ln.strip()]
            for n, (lineno, text) in enumerate(captions):
                b.add(id=b.make_id(rel_stem, _canonical(code), n), image=d / image, text=text, lang=code,
                      where=f"{where}:{lineno}", group=rel, label=label)
    return b.finish()


def _csv_rows(reader: csv.DictReader, path: Path, header: bool = False):
    """The reader's rows (or, with ``header``, its field names once), a broken table a :class:`DataError`
    naming the line: a NUL byte, a field over csv's 128 kB limit, bytes that are not UTF-8."""
    try:
        if header:
            yield reader.fieldnames
            return
        yield from reader
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as a table after line {reader.line_num} ({type(e).__name__}: {e})") from None


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter in ("tab", "\\t", "\t"):
        return "\t"
    if delimiter:
        if len(delimiter) != 1:
            raise DataError(f"--delimiter must be one character (or 'tab'), got {delimiter!r}")
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def import_csv(table: str | os.PathLike, images: str | os.PathLike | None = None, *, image_col: str = "image",
               text_col: str = "text", lang_col: str | None = None, lang: str | None = None,
               id_col: str | None = None, label_col: str | None = None, split_col: str | None = None,
               delimiter: str | None = None, options: ImportOptions | None = None) -> ImportResult:
    """A CSV/TSV table with a header row. Image paths are relative to ``images`` (default: the table's
    folder). ``lang_col`` per row, ``lang`` for all rows (or for rows whose language cell is empty).
    Id: the ``id_col`` value, else ``csv-<line number>``."""
    path = Path(table)
    root = Path(images) if images is not None else path.parent
    if images is not None and not root.is_dir():
        raise DataError(f"--images {root}: not a folder")
    if lang_col is None and lang is None:
        raise DataError(f"{path}: no language: pass --lang-col (a column) or --lang (one for all rows)")
    delim = _delimiter(path, delimiter)
    b = RecordBuilder("csv", options, root)
    try:
        f = open(path, encoding="utf-8-sig", newline="")  # -sig: Excel writes a byte-order mark
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with f:
        reader = csv.DictReader(f, delimiter=delim)
        header = next(_csv_rows(reader, path, header=True), None) or []
        wanted = {"--image-col": image_col, "--text-col": text_col, "--lang-col": lang_col, "--id-col": id_col,
                  "--label-col": label_col, "--split-col": split_col}
        missing = [f"{flag} {col!r}" for flag, col in wanted.items() if col is not None and col not in header]
        if missing:
            raise DataError(f"{path}: no column {', '.join(missing)}; the header has {header} "
                            f"(delimiter {delim!r}; set --delimiter if that is wrong)")
        bad_splits = []
        for row in progress(_csv_rows(reader, path), desc="csv"):
            where = f"{path.name}:{reader.line_num}"
            code = (row.get(lang_col) or "").strip() if lang_col else ""
            split = b.split
            if split_col:
                try:
                    split = normalize_split(row.get(split_col) or "", where) or b.split
                except DataError:
                    bad_splits.append(f"{row.get(split_col)!r} at {where}")
                    continue
            image = (row.get(image_col) or "").strip()
            if not image:
                b.skip(where, f"empty {image_col!r}")
                continue
            rid = (row.get(id_col) or "").strip() if id_col else b.make_id(reader.line_num)
            if not rid:
                b.skip(where, f"empty {id_col!r}")
                continue
            label = (row.get(label_col) or "").strip() or None if label_col else None
            b.add(id=rid, image=root / image, text=row.get(text_col) or "", lang=code or lang or "", where=where,
                  group=Path(image).as_posix(), label=label, split=split)
    if bad_splits:
        raise DataError(f"{len(bad_splits)} row(s) with an unknown split (use train, val, test or empty): "
                        + ", ".join(bad_splits[:10]) + (" ..." if len(bad_splits) > 10 else ""))
    return b.finish()
