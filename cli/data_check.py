"""`lugha data check`: validate a manifest, report every problem per kind, write a cleaned copy."""
from __future__ import annotations

import argparse

from lugha.cli._common import user_path

HELP = "Check a manifest: count every problem per kind, skip bad rows, fix what can be fixed."
DESCRIPTION = """Reads MANIFEST (JSONL), checks each line and each image, and prints one table row per
problem kind (severity skip / fix / warn, count, example lines). Nothing is dropped silently: by default
bad rows are skipped and listed, fixable rows are fixed and counted, and two files are written:

  <stem>.clean.jsonl     the kept rows (or --out); fixed images point into <stem>.fixed/
  <stem>.skipped.jsonl   every skipped row: line, id, kind, message and the row itself

Fixes: text -> Unicode NFC; text over --max-chars (or --max-tokens of --tokenizer) truncated; EXIF
orientation and CMYK / 16-bit / palette / alpha / grayscale images written once as upright RGB copies
(meta.source_image keeps the original path). Skips: invalid UTF-8, bad JSON, JSON nested too deep,
lone surrogate escapes (invalid Unicode), lines over 1 MiB, missing or bad fields, empty text, image
paths outside MANIFEST's folder (unless --allow-outside), devices / FIFOs / files over --max-image-mb,
missing / empty / corrupt / unsupported (judged by content; only JPEG, PNG, WebP, BMP, GIF, TIFF are
decoded) / tiny images, decompression bombs (--max-pixels), duplicate ids (later rows) and the same
image bytes in two splits (the later row).
Warns: a language with fewer than --min-per-split rows in a split.

Examples:
  lugha data check datasets/demo/manifest.jsonl
  lugha data check field.jsonl --workers 8 --max-pixels 80000000 --min-side 64
  lugha data check field.jsonl --tokenizer tokenizer.json --max-tokens 64 --json > check.json
  lugha data check field.jsonl --strict --no-write      # CI: exit 1 on any problem, write nothing

Exit status: 0, or 1 with --strict when any problem (skip, fix or warn) was found.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=user_path, metavar="MANIFEST", help="JSONL manifest to check")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any problem is found")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=user_path, help="cleaned manifest (default <stem>.clean.jsonl beside MANIFEST)")
    parser.add_argument("--skipped", type=user_path, help="skip list (default <stem>.skipped.jsonl beside MANIFEST)")
    parser.add_argument("--fixed-dir", type=user_path, help="folder for upright RGB copies (default <stem>.fixed/ beside --out)")
    parser.add_argument("--no-write", dest="write", action="store_false", help="report only; write no files")
    parser.add_argument("--max-pixels", type=int, default=50_000_000,
                        help="skip images with more pixels than this (default 50,000,000)")
    parser.add_argument("--min-side", type=int, default=32, help="skip images under this many px on a side (32)")
    parser.add_argument("--max-chars", type=int, default=512, help="truncate text to this many characters (512)")
    parser.add_argument("--tokenizer", type=user_path, help="tokenizer.json: bound text by --max-tokens instead of --max-chars")
    parser.add_argument("--max-tokens", type=int, default=64, help="with --tokenizer: truncate to N tokens (64)")
    parser.add_argument("--min-per-split", type=int, default=5,
                        help="warn when a language has fewer kept rows in a split (5; 0 disables)")
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (default min(4, CPUs))")
    parser.add_argument("--examples", type=int, default=3, help="example rows per kind (3)")
    parser.add_argument("--allow-outside", action="store_true",
                        help="read image paths that are absolute or climb out of MANIFEST's folder with '..' "
                             "(refused by default: a manifest from elsewhere must not pick files on this machine)")
    parser.add_argument("--max-image-mb", type=float, default=128.0,
                        help="skip image files larger than this, unread (default 128)")


def _examples_cell(examples: list[dict], count: int) -> str:
    parts = []
    for ex in examples:
        if ex.get("line") is None:  # per-language warnings have no line
            parts.append(f"{ex['lang']}/{ex['split']}={ex['rows']}")
        else:
            parts.append(f"line {ex['line']}" + (f" ({ex['id']})" if ex.get("id") else ""))
    more = count - len(examples)
    return ", ".join(parts) + (f", +{more} more" if more > 0 else "")


def format_report(report) -> str:
    from lugha.reports import format_table
    from lugha.data.check import KINDS

    rows = [{"kind": k, "severity": KINDS[k][0], "count": n, "examples": _examples_cell(report.examples[k], n)}
            for k, n in report.counts.items()]
    lines = [f"{report.manifest}: {report.rows} rows, {report.images_checked} distinct images"]
    lines.append(format_table(rows, ["kind", "severity", "count", "examples"]) if rows else "no problems found")
    lines.append(f"kept {report.kept} of {report.rows} rows ({report.skipped} skipped, {report.fixed_rows} fixed)"
                 + (f"; {report.blank_lines} blank line(s) ignored" if report.blank_lines else ""))
    for name, path in report.outputs.items():
        lines.append(f"  {name}: {path}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lugha.reports import print_json
    from lugha.data.check import CheckOptions, check_manifest

    opts = CheckOptions(
        max_pixels=args.max_pixels, min_side=args.min_side, max_chars=args.max_chars, tokenizer=args.tokenizer,
        max_tokens=args.max_tokens, min_per_split=args.min_per_split, workers=args.workers,
        examples=args.examples, out=args.out, skipped=args.skipped, fixed_dir=args.fixed_dir, write=args.write,
        max_image_bytes=int(args.max_image_mb * 1024 * 1024), allow_outside=args.allow_outside,
    )
    report = check_manifest(args.manifest, opts)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    return 1 if args.strict and not report.ok else 0
