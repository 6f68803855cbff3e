"""`lugha data coverage`: how well a tokenizer covers a dataset, per language and per script."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lugha.atomic import atomic_write_text
from lugha.config import DEFAULT_MODEL
from lugha.data.coverage import (DEFAULT_MAX_LENGTH, coverage_report, load_tokenizer, resolve_tokenizer, table_rows,
                             vocab_json)
from lugha.records import read_manifest
from lugha.cli._common import user_path, user_path_obj
from lugha.reports import format_table, print_json

HELP = "Tokenizer coverage per language and script: unknown tokens, fertility, truncation, vocabulary."
DESCRIPTION = f"""Measure a tokenizer on a manifest's texts, per language and per script:

  unk_rate         unknown tokens / tokens (text the model cannot see)
  fertility        tokens per whitespace word, special tokens excluded (higher = more fragmented)
  truncated_share  share of texts longer than --max-length once prefix and special tokens are added
  vocab            distinct token ids used (--vocab-out writes them: the input for vocabulary trimming)
  unknown          the commonest pieces of text that became the unknown token, with counts

--tokenizer takes a tokenizer.json, a folder holding one, or a model config name (default
{DEFAULT_MODEL}, whose tokenizer `lugha weights e5-small` materialises). A config name also sets the
default --max-length and --prefix from its text tower.

Examples:
  lugha weights e5-small
  lugha data coverage datasets/demo/manifest.jsonl
  lugha data coverage datasets/demo/manifest.jsonl --tokenizer path/to/tokenizer.json --max-length 32 --json
  lugha data coverage datasets/demo/manifest.jsonl --vocab-out vocab.json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=user_path, help="JSONL manifest (one image-text pair per line)")
    parser.add_argument("--tokenizer", default=DEFAULT_MODEL,
                        help=f"tokenizer.json, folder, or model config name (default: {DEFAULT_MODEL})")
    parser.add_argument("--max-length", type=int, default=None,
                        help=f"truncation length in tokens (default: the model's, else {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--prefix", default=None,
                        help="text prepended before tokenising for the truncation check "
                             "(default: the model's, e.g. 'passage: ' for e5; '' for a plain tokenizer)")
    parser.add_argument("--split", default=None, help="only rows of this split (train, val or test)")
    parser.add_argument("--vocab-out", type=user_path_obj, default=None, help="write the used token ids as JSON here")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def run(args: argparse.Namespace) -> int:
    tok_path, model_max, model_prefix = resolve_tokenizer(args.tokenizer)
    max_length = args.max_length or model_max or DEFAULT_MAX_LENGTH
    prefix = model_prefix if args.prefix is None else args.prefix
    records = read_manifest(args.manifest)
    if args.split is not None:
        records = [r for r in records if r.split == args.split]
    start = time.monotonic()
    report = coverage_report(records, load_tokenizer(tok_path), max_length=max_length, prefix=prefix)
    report = {"manifest": str(args.manifest), "tokenizer": str(tok_path), **report,
              "seconds": round(time.monotonic() - start, 3)}
    if args.vocab_out:
        atomic_write_text(args.vocab_out, json.dumps(vocab_json(report, tok_path)) + "\n")
    if args.json:  # the id list goes to --vocab-out; here only its size
        print_json({k: v for k, v in report.items() if k != "vocab_ids"} | {"vocab_used": len(report["vocab_ids"])})
        return 0
    unknown = ["unknown"] if report["overall"]["unk"] else []
    cols_lang = ["lang", "script", "rows", "unk_rate", "fertility", "truncated_share", "vocab", *unknown]
    cols_script = ["script", "langs", "rows", "unk_rate", "fertility", "truncated_share", "vocab", *unknown]
    print(f"tokenizer {tok_path} (vocab {report['vocab_size']}), max_length {max_length}, prefix {prefix!r}, "
          f"{report['overall']['rows']} rows")
    print("\nBy language\n" + format_table(table_rows(report, "by_lang"), cols_lang))
    print("\nBy script\n" + format_table(table_rows(report, "by_script"), cols_script))
    used = len(report["vocab_ids"])
    print(f"\nvocabulary used: {used} of {report['vocab_size']} ids ({used / report['vocab_size']:.1%}, specials "
          f"included)" + (f"; written to {args.vocab_out}" if args.vocab_out else ""))
    return 0
