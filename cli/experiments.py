"""`lugha experiments`: reproducible comparisons behind the README's tables (torch is imported in run() only)."""
from __future__ import annotations

import argparse
import sys

from lugha.cli._common import user_path

HELP = "Run a comparison experiment: baselines, transfer, forgetting, fusion heads."
DESCRIPTION = """Reproducible experiments on a dataset, each printing one comparison table (Markdown) or JSON.

  lugha experiments fusion --data datasets/demo/manifest.jsonl
  lugha experiments fusion --data datasets/demo/manifest.jsonl --budget-steps 500 --json > fusion.json
  lugha experiments fusion --data datasets/demo/manifest.jsonl --heads early,late --train-langs en,sw

fusion: early, late, cross-attention and prototype fusion heads (lugha.training.fusion) classify each
pair's label (the demo: the CLDR emoji group) from the image and the text, on frozen towers and cached
features, all under the same budget (--budget-steps, --lr, --batch-size, --seed). Protocol:
  1. the model's projections train contrastively on the train split in --train-langs (shared by every head);
  2. each head trains on the same rows;
  3. test split, every language: languages outside --train-langs are cross-lingual transfer (their text
     was never seen with any label), plus accuracy with the text missing (image only) and the image
     missing (text only).
Columns: trainable head parameters, accuracy (mean over languages; seen; held out; image only; text
only), peak training memory (peak RSS growth of a fresh process training the head), ms per training
step, the head exported to ONNX (onnxruntime latency at batch 1: warm-up, then the median of --repeats
runs; file size) and its fp32 parity against PyTorch. A per-language table follows.
Needs the model's weights (`lugha weights e5-small`); tower features are cached, so a rerun only
trains the heads. On a 2-core CPU the default budget takes a few minutes after the first caching.
"""
ACTIONS = ("baselines", "transfer", "forgetting", "fusion")


def _langs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="EXPERIMENT")
    p = sub.add_parser("fusion", help="fusion heads: accuracy, missing modality, memory, ONNX latency",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=user_path, required=True, metavar="MANIFEST", help="JSONL manifest with train/test splits and labels")
    p.add_argument("--model", default=None, help="model config name (default: lowclip-lite0-e5small)")
    p.add_argument("--heads", default="early,late,xattn,prototype", help="comma-separated heads to compare")
    p.add_argument("--train-langs", default="en,sw,hi,am", help="languages the heads train on (others are held out)")
    p.add_argument("--test-langs", default="", help="languages to test (default: all in the test split)")
    p.add_argument("--label-field", default="label", choices=("label", "subgroup"), help="record field to classify")
    p.add_argument("--budget-steps", type=int, default=300, help="optimizer steps per head (default: 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proj-epochs", type=int, default=5, help="epochs of the shared projection stage (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads for heads (default: 1)")
    p.add_argument("--repeats", type=int, default=200, help="timed ONNX runs per head (default: 200)")
    p.add_argument("--cache-dir", type=user_path, default=None, help="feature cache folder (default: LUGHA_HOME/cache)")
    p.add_argument("--work", type=user_path, default=None, metavar="DIR", help="keep the projection run and ONNX files here")
    p.add_argument("--no-isolate", action="store_true",
                   help="train heads in this process (faster; the memory column is then less exact)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(_run=run_fusion)
    from lugha.cli.experiments_questions import configure_questions

    configure_questions(sub)


def run_fusion(args: argparse.Namespace) -> int:
    from lugha.config import DEFAULT_MODEL
    from lugha.export.fusion_experiment import FusionExperiment, format_report, run_fusion_experiment

    from lugha.reports import print_json

    exp = FusionExperiment(manifest=args.data, model=args.model or DEFAULT_MODEL, heads=_langs(args.heads),
                           train_langs=_langs(args.train_langs), test_langs=_langs(args.test_langs),
                           label_field=args.label_field, steps=args.budget_steps, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, proj_epochs=args.proj_epochs, threads=args.threads,
                           latency_repeats=args.repeats, cache_dir=args.cache_dir, work_dir=args.work,
                           isolate=not args.no_isolate)
    quiet = args.quiet or args.json
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    report = run_fusion_experiment(exp, say=say, show_progress=not quiet)
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0
