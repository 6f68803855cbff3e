"""Dataset validation: every problem of a manifest counted per kind, bad rows skipped, never silently.

:func:`check_manifest` is shared by ``lugha data check`` and training. It reads the manifest as bytes,
one line at a time (a stray Latin-1 byte is a reported row, not a crash), checks text, then decodes each
distinct image once in a process pool (:mod:`lugha.data.image_checks`), then decides duplicates and
split leakage sequentially in line order, so the result is the same for any worker count.

Decisions (stated here because the report's numbers depend on them):

* a row gets at most one skip reason, the first found in this order: line (utf-8, json, fields) ->
  text -> image -> duplicate id -> leakage. Fix-ups and warnings are counted on *kept* rows only;
* EXIF orientation and non-RGB modes are fixed by writing an upright RGB copy into ``fixed_dir``
  (named by the source's SHA-256) and pointing the cleaned row at it; ``meta.source_image`` keeps the
  original path and ``meta.fixes`` the kinds, so no loader has to know about EXIF;
* over-long text is truncated to ``max_chars`` characters (or ``max_tokens`` tokens of ``tokenizer``),
  never inside a base letter + combining mark cluster; ``meta.text_chars`` keeps the original length;
* a duplicate id is one an earlier *kept* row already has; leakage is the same image bytes (SHA-256, not
  path) in two non-empty splits: the first row in manifest order keeps its split, the later row is skipped.
"""
from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from lugha._schema import from_dict, to_dict
from lugha.errors import ConfigError, DataError
from lugha.data import image_checks as ic
from lugha.data.text_limits import truncator
from lugha.atomic import atomic_write
from lugha.image_io import MAX_IMAGE_BYTES
from lugha.jsonl import LINE_KINDS, iter_raw_lines, open_binary, parse_line, unicode_problem
from lugha.records import SPLITS, Record, write_manifest

REQUIRED = ("id", "image", "text", "lang")

# kind id -> (severity, what it means). Ids are stable: scripts and dashboards key on them.
KINDS: dict[str, tuple[str, str]] = {
    **{kind: ("skip", what) for kind, what in LINE_KINDS.items()},  # invalid_utf8, bad_json, malformed_json...
    "missing_field": ("skip", "a required field (id, image, text, lang) is missing or empty"),
    "bad_field": ("skip", "a field has the wrong type, an unknown name or a bad value"),
    "empty_text": ("skip", "text is empty or whitespace only"),
    ic.MISSING_FILE: ("skip", "image file does not exist"),
    ic.UNREADABLE_FILE: ("skip", "image path cannot be read (a folder, permissions, I/O error)"),
    "image_outside_root": ("skip", "image path is absolute or leaves the manifest's folder (see --allow-outside)"),
    ic.NOT_REGULAR_FILE: ("skip", "image path is a device, FIFO or socket, not a file"),
    ic.FILE_TOO_LARGE: ("skip", "image file is larger than --max-image-mb"),
    ic.ZERO_BYTE: ("skip", "image file is empty"),
    ic.UNSUPPORTED_FORMAT: ("skip", "content is not an image format Pillow decodes (judged by bytes, not name)"),
    ic.DECOMPRESSION_BOMB: ("skip", "image declares more pixels than --max-pixels"),
    ic.CORRUPT_IMAGE: ("skip", "image is truncated or corrupt"),
    ic.TINY_IMAGE: ("skip", "image is under --min-side pixels on a side"),
    "duplicate_id": ("skip", "an earlier kept row has the same id"),
    "split_leakage": ("skip", "the same image bytes are already in another split"),
    "text_nfc": ("fix", "text normalised to Unicode NFC"),
    "text_too_long": ("fix", "text truncated to --max-chars (or --max-tokens)"),
    ic.EXIF_ORIENTATION: ("fix", "EXIF orientation applied: an upright copy is used"),
    "mode_cmyk": ("fix", "CMYK image converted to RGB"),
    "mode_16bit": ("fix", "16-bit / integer image scaled to 8-bit RGB"),
    "mode_palette": ("fix", "palette image converted to RGB (transparency over white)"),
    "mode_alpha": ("fix", "image with alpha composited over white to RGB"),
    "mode_grayscale": ("fix", "grayscale image converted to RGB"),
    ic.MODE_OTHER: ("fix", "other colour mode converted to RGB"),
    "few_rows": ("warn", "a language has fewer than --min-per-split kept rows in a split"),
}


@dataclass(frozen=True)
class CheckOptions:
    max_pixels: int = 50_000_000
    min_side: int = 32
    max_chars: int = 512
    tokenizer: str | None = None  # a tokenizer.json: then max_tokens, not max_chars, bounds the text
    max_tokens: int = 64
    min_per_split: int = 5
    workers: int = 0  # 0: min(4, CPUs); 1: in this process
    examples: int = 5  # example rows kept per kind
    out: str | None = None  # cleaned manifest; default <manifest stem>.clean.jsonl beside it
    skipped: str | None = None  # skip list; default <manifest stem>.skipped.jsonl beside the manifest
    fixed_dir: str | None = None  # upright RGB copies; default <manifest stem>.fixed/ beside `out`
    write: bool = True  # False: report only (rows needing fixes keep their original image)
    max_image_bytes: int = MAX_IMAGE_BYTES  # larger files are skipped unread
    allow_outside: bool = False  # True: image paths may be absolute or climb out of the manifest's folder

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_side", "max_chars", "max_tokens", "examples", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.min_per_split < 0 or self.workers < 0:
            raise ConfigError("min_per_split/workers", "must be >= 0")


@dataclass
class Finding:
    kind: str
    severity: str
    message: str
    line: int | None = None  # 1-based manifest line; None for per-language warnings
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def example(self) -> dict:
        return {"line": self.line, "id": self.id, "message": self.message, **self.extra}


@dataclass
class CheckReport:
    manifest: str
    options: CheckOptions
    rows: int = 0  # non-blank manifest lines
    kept: int = 0
    skipped: int = 0
    fixed_rows: int = 0  # kept rows with at least one fix-up
    blank_lines: int = 0
    images_checked: int = 0  # distinct image paths decoded
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    per_lang: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the kept, cleaned rows (not in to_dict)

    @property
    def problems(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def to_dict(self) -> dict:
        d = {k: to_dict(getattr(self, k)) for k in ("manifest", "options", "rows", "kept", "skipped",
                                                   "fixed_rows", "blank_lines", "images_checked")}
        d["severity"] = {k: KINDS[k][0] for k in self.counts}
        d.update(counts=dict(self.counts), examples=self.examples, per_lang=self.per_lang, outputs=self.outputs)
        return d


@dataclass
class _Row:
    line: int
    data: dict | None = None  # the parsed object, as written
    raw: str | None = None  # the line text when it could not be parsed
    record: Record | None = None
    skip: tuple[str, str, dict] | None = None  # (kind, message, extra)
    fixes: list[tuple[str, str]] = field(default_factory=list)
    image_path: str | None = None
    image_result: ic.ImageResult | None = None

    @property
    def id(self) -> str | None:
        if self.record is not None:
            return self.record.id
        value = (self.data or {}).get("id")
        return value if isinstance(value, str) else None if value is None else str(value)


def default_paths(manifest: str | os.PathLike, opts: CheckOptions) -> tuple[Path, Path, Path]:
    """(cleaned manifest, skip list, fixed-image folder) for ``manifest`` under ``opts``."""
    manifest = Path(manifest)
    name = manifest.name[: -len(".gz")] if manifest.name.endswith(".gz") else manifest.name  # read streaming
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem
    out = Path(opts.out) if opts.out else manifest.with_name(f"{stem}.clean.jsonl")
    skipped = Path(opts.skipped) if opts.skipped else manifest.with_name(f"{stem}.skipped.jsonl")
    fixed = Path(opts.fixed_dir) if opts.fixed_dir else out.parent / f"{stem}.fixed"
    return out, skipped, fixed


def check_manifest(path: str | os.PathLike, options: CheckOptions | None = None) -> CheckReport:
    """Check every row of ``path``; write the cleaned manifest and skip list unless ``options.write`` is off."""
    opts = options or CheckOptions()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    out, skipped_path, fixed_dir = default_paths(path, opts)
    report = CheckReport(manifest=str(path), options=opts)
    truncate = truncator(opts)
    rows = _read_rows(path, report, truncate)
    _check_images(rows, path.parent, fixed_dir if opts.write else None, opts, report)
    _decide(rows, report, path.parent, out.parent)
    _few_rows(report, opts)
    _summarise(rows, report, opts)
    if opts.write:
        write_manifest(out, report.records)
        _write_skipped(skipped_path, rows)
        report.outputs = {"clean": str(out), "skipped": str(skipped_path)}
        if fixed_dir.is_dir():
            report.outputs["fixed_dir"] = str(fixed_dir)
    return report


def _read_rows(path: Path, report: CheckReport, truncate) -> list[_Row]:
    rows = []
    with open_binary(path) as f:
        for lineno, raw in iter_raw_lines(f):
            if lineno == 1 and raw is not None and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a BOM from a Windows editor is not part of the first row
            if raw is not None and not raw.strip():
                report.blank_lines += 1
                continue
            row = _Row(line=lineno)
            rows.append(row)
            _parse_line(row, raw, truncate)
    return rows


def _parse_line(row: _Row, raw: bytes | None, truncate) -> None:
    line = parse_line(row.line, raw)
    if line.kind is not None:
        row.raw, row.skip = line.raw, (line.kind, line.message, {})
        if line.kind in ("invalid_utf8", "invalid_unicode"):
            row.data = _loose_fields(raw)  # best effort, only so the report can name the row's id and language
        return
    data = line.data
    row.data = data
    missing = [k for k in REQUIRED if data.get(k) is None or (k != "text" and data.get(k) == "")]
    if missing:
        row.skip = ("missing_field", f"required field(s) missing or empty: {', '.join(missing)}", {})
        return
    try:
        row.record = from_dict(Record, dict(data), "record")
    except ConfigError as e:
        row.skip = ("bad_field", str(e), {})
        return
    rec = row.record
    if not rec.text.strip():
        row.skip = ("empty_text", f"text is {'empty' if not rec.text else 'whitespace only'}", {})
        return
    nfc = unicodedata.normalize("NFC", rec.text)
    if nfc != rec.text:
        row.fixes.append(("text_nfc", f"{len(rec.text)} -> {len(nfc)} code points after NFC"))
        rec.text = nfc
    cut = truncate(rec.text)
    if cut is not None:
        row.fixes.append(("text_too_long", cut[1]))
        rec.meta = {**rec.meta, "text_chars": len(rec.text)}
        rec.text = cut[0]


def _loose_fields(raw: bytes) -> dict | None:
    """``id`` and ``lang`` of a line that parses only loosely, where they are clean strings themselves."""
    try:
        loose = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(loose, dict):
        return None
    return {k: v for k in ("id", "lang") if isinstance(v := loose.get(k), str) and not unicode_problem(v)}


def _check_images(rows: list[_Row], root: Path, fixed_dir: Path | None, opts: CheckOptions, report) -> None:
    """Decode each distinct image path once and hand every row its path's result."""
    paths: dict[str, None] = {}
    for row in rows:
        if row.skip is None:
            if not opts.allow_outside and (why := outside_root(row.record.image)):
                row.skip = ("image_outside_root", f"{row.record.image!r} {why}; pass --allow-outside "
                            "if the manifest is yours", {"image": row.record.image})
                continue
            row.image_path = os.path.normpath(row.record.image_path(root))
            paths.setdefault(row.image_path)
    results = ic.check_images(list(paths), opts.max_pixels, opts.min_side,
                              None if fixed_dir is None else str(fixed_dir), opts.workers, opts.max_image_bytes)
    report.images_checked = len(results)
    by_path = {r.path: r for r in results}
    for row in rows:
        if row.skip is None:
            row.image_result = by_path[row.image_path]


def outside_root(image: str) -> str | None:
    """Why a manifest's image path leaves the manifest's folder (None when it stays inside). Judged on the
    text, as written: a symlink the dataset's owner put inside the folder (to a USB disk) is followed."""
    p = PurePosixPath(image.replace("\\", "/"))
    if p.is_absolute() or PureWindowsPath(image).drive:
        return "is absolute"
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return "climbs out of the manifest's folder with '..'"
    return None


def _decide(rows: list[_Row], report: CheckReport, root: Path, out_dir: Path) -> None:
    """Image verdicts, duplicate ids and leakage, in line order; builds the cleaned records."""
    seen_ids: dict[str, _Row] = {}
    first_split: dict[str, _Row] = {}  # image sha256 -> first kept row with a non-empty split
    for row in rows:
        if row.skip is not None:
            continue
        res = row.image_result
        rec = row.record
        if res.problem:
            row.skip = (res.problem, f"{rec.image}: {res.message}", {"image": rec.image})
            continue
        if rec.id in seen_ids:
            row.skip = ("duplicate_id", f"id {rec.id!r} already on line {seen_ids[rec.id].line}",
                        {"first_line": seen_ids[rec.id].line})
            continue
        first = first_split.get(res.sha256) if rec.split else None
        if first is not None and first.record.split != rec.split:
            row.skip = ("split_leakage", f"{rec.image} in {rec.split!r} has the same bytes as line {first.line} "
                        f"({first.record.image}, id {first.record.id!r}) in {first.record.split!r}",
                        {"other_line": first.line, "other_id": first.record.id, "other_split": first.record.split})
            continue
        seen_ids[rec.id] = row
        if rec.split:
            first_split.setdefault(res.sha256, row)
        row.fixes.extend(res.fixes)
        image = res.fixed_path or row.image_path
        if res.fixed_path:
            rec.meta = {**rec.meta, "source_image": rec.image, "fixes": [k for k, _ in res.fixes]}
        if res.fixed_path or out_dir.resolve() != root.resolve():
            rec.image = image if Path(rec.image).is_absolute() else os.path.relpath(image, out_dir)
        report.records.append(rec)


def _few_rows(report: CheckReport, opts: CheckOptions) -> None:
    if not opts.min_per_split:
        return
    counts = Counter((r.lang, r.split) for r in report.records if r.split)
    splits = [s for s in SPLITS if any(k[1] == s for k in counts)]
    for lang in sorted({r.lang for r in report.records}):
        for split in splits:
            n = counts.get((lang, split), 0)
            if n < opts.min_per_split:
                report.findings.append(Finding(
                    "few_rows", "warn", f"{lang}: {n} kept row(s) in {split} < --min-per-split {opts.min_per_split}",
                    extra={"lang": lang, "split": split, "rows": n}))


def _summarise(rows: list[_Row], report: CheckReport, opts: CheckOptions) -> None:
    row_findings = []
    per_lang: dict[str, Counter] = {}
    for row in rows:
        lang = str((row.data or {}).get("lang") or "?")
        c = per_lang.setdefault(lang, Counter())
        c["rows"] += 1
        if row.skip is not None:
            kind, msg, extra = row.skip
            row_findings.append(Finding(kind, "skip", msg, row.line, row.id, extra))
            c["skipped"] += 1
            continue
        c["kept"] += 1
        c[f"kept_{row.record.split or 'unsplit'}"] += 1
        if row.fixes:
            report.fixed_rows += 1
            c["fixed"] += 1
        row_findings += [Finding(k, KINDS[k][0], m, row.line, row.id) for k, m in row.fixes]
    report.findings = row_findings + report.findings
    report.rows, report.kept = len(rows), len(report.records)
    report.skipped = report.rows - report.kept
    counts = Counter(f.kind for f in report.findings)
    report.counts = {k: counts[k] for k in KINDS if counts[k]}
    for f in report.findings:
        ex = report.examples.setdefault(f.kind, [])
        if len(ex) < opts.examples:
            ex.append(f.example())
    report.examples = {k: report.examples[k] for k in report.counts}
    report.per_lang = {lang: {"rows": 0, "kept": 0, "skipped": 0, "fixed": 0, **dict(c)}
                       for lang, c in sorted(per_lang.items())}


def _write_skipped(path: Path, rows: list[_Row]) -> None:
    """One JSON line per skipped row: where, why, and the row itself (or its raw text) to fix and re-add."""
    with atomic_write(path) as f:
        for row in rows:
            if row.skip is None:
                continue
            kind, msg, extra = row.skip
            entry = {"line": row.line, "id": row.id, "kind": kind, "message": msg, **extra}
            # The raw text when the line could not be read as written (a lossy parse is no record of it).
            entry.update({"raw": row.raw} if row.raw is not None else {"row": row.data})
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


__all__ = ["KINDS", "CheckOptions", "CheckReport", "Finding", "check_manifest", "default_paths"]
