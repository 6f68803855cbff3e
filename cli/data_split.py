"""`lugha data split`: assign train/val/test by group, deterministically."""
from __future__ import annotations

import argparse

from lugha.cli._common import user_path

HELP = "Assign train/val/test by group (image): deterministic, seedable, stable as rows are added."
DESCRIPTION = """Sets each record's split from a hash of (--seed, its group), where the group is the
record's `group` field or else its image. All captions of one image, in every language, land in the
same split; the same seed gives the same split on any machine, and adding rows later never moves a
group that was already there. Ratios are met approximately (each group is an independent draw).

Examples:
  lugha data split coco.jsonl --out coco.split.jsonl
  lugha data split field.jsonl --out field.jsonl --ratios 0.9,0.1        # no test split
  lugha data split merged.jsonl --out merged.split.jsonl --keep-existing  # keep official splits
  lugha data split demo.jsonl --out demo.s1.jsonl --seed 1 --json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=user_path, metavar="MANIFEST", help="JSONL manifest to split")
    parser.add_argument("--out", type=user_path, required=True, help="manifest to write (may be MANIFEST itself)")
    parser.add_argument("--seed", type=int, default=0, help="hash seed; another seed, another split (default 0)")
    parser.add_argument("--ratios", default="0.8,0.1,0.1",
                        help="train,val[,test] fractions or weights (default 0.8,0.1,0.1)")
    parser.add_argument("--keep-existing", action="store_true",
                        help="groups that already have a split keep it; only the others are assigned")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")


def run(args: argparse.Namespace) -> int:
    from lugha.records import SPLITS, read_manifest, write_manifest
    from lugha.data.split import assign_splits, parse_ratios, split_counts
    from lugha.reports import format_table, print_json

    ratios = parse_ratios(args.ratios)
    records = assign_splits(read_manifest(args.manifest), ratios, args.seed, keep_existing=args.keep_existing)
    write_manifest(args.out, records)
    rows = split_counts(records)
    if args.json:
        print_json({"out": args.out, "records": len(records), "seed": args.seed, "ratios": list(ratios),
                    "keep_existing": args.keep_existing, "counts": rows})
        return 0
    print(f"wrote {len(records)} records to {args.out} (seed {args.seed}, ratios "
          + ",".join(f"{r:.2f}" for r in ratios) + ")")
    print(format_table(rows, ["lang", "language", *SPLITS, "total"]))
    return 0
