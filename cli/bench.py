"""`lugha bench`: time a bundle on this machine's backends, against PyTorch eager fp32."""
from __future__ import annotations

import argparse

from lugha.cli._common import PUBKEY_HELP, user_path

HELP = "Benchmark a bundle on this machine's backends."
DESCRIPTION = """Time every graph of a bundle on every installed backend (ONNX Runtime, LiteRT, tflite-runtime)
and precision: cold start, p50/p90/p99 latency and throughput per batch size, peak memory, file sizes,
and parity with the bundle's golden outputs. Each backend/precision runs in a fresh process. With
--reference (needs torch), PyTorch eager fp32 is timed on the same inputs and every row gets its ratio.

  lugha bench bundles/lite0-e5                               # all installed backends, batch 1 and 8
  lugha bench bundles/lite0-e5 --backends litert --precisions int8 --threads 4
  lugha bench bundles/lite0-e5 --reference runs/yo-lora      # + PyTorch column and vs_torch ratios
  lugha bench bundles/lite0-e5 --reference config            # time the untrained config (no run needed)
  lugha bench bundles/lite0-e5 --json bench.json --html bench.html
"""


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def _reference(text: str) -> str:
    """A run folder, made absolute like every user path; the word ``config`` stays a word (it was made
    ``$PWD/config`` once, and the reference then looked for a run folder of that name)."""
    from lugha.export.eager_reference import CONFIG_REFERENCE

    return text if text == CONFIG_REFERENCE else user_path(text)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=user_path, help="bundle folder (or its manifest.json)")
    parser.add_argument("--pubkey", type=user_path, metavar="PEM", help=PUBKEY_HELP)
    parser.add_argument("--backends", type=_csv(str), default=None, metavar="LIST",
                        help="onnxruntime,litert,tflite (default: every installed one the bundle has graphs for)")
    parser.add_argument("--precisions", type=_csv(str), default=None, metavar="LIST",
                        help="int8,fp16,fp32 (default: every precision in the bundle)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per engine (default 1)")
    parser.add_argument("--batch", type=_csv(int), default=(1, 8), metavar="LIST", help="batch sizes (default 1,8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per graph and batch (default 20)")
    parser.add_argument("--reference", type=_reference, metavar="RUN",
                        help="training run folder for the PyTorch eager fp32 column ('config': the bundle's "
                             "model config with untrained projections, for timing only)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every case in this process (faster; cold start and peak RSS then mix)")
    parser.add_argument("--json", type=user_path, metavar="OUT", help="write the full report as JSON ('-' for stdout)")
    parser.add_argument("--html", type=user_path, metavar="OUT", help="write a self-contained HTML report with plots")


def run(args: argparse.Namespace) -> int:
    from lugha.errors import ConfigError
    from lugha.runtimes.bench import COLUMNS, BenchSettings, markdown_report, run_benchmark
    from lugha.runtimes.bench_html import render_html
    from lugha.reports import print_json, write_report

    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads", f"must be >= 1, got {args.threads}")
    if not args.batch or min(args.batch) < 1:
        raise ConfigError("--batch", f"batch sizes must be >= 1, got {args.batch}")
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats/--warmup", "need repeats >= 1 and warmup >= 0")
    # The PyTorch reference lives above the runtimes: bench gets the factory that opens it, by name,
    # because each case runs in its own worker process.
    from lugha.export.eager_reference import REFERENCE_FACTORY

    settings = BenchSettings(backends=args.backends, precisions=args.precisions, threads=args.threads,
                             batches=tuple(args.batch), warmup=args.warmup, repeats=args.repeats,
                             reference=args.reference, isolate=not args.in_process,
                             reference_factory=REFERENCE_FACTORY if args.reference is not None else None)
    from lugha.runtimes.signature import check_bundle_trust

    check_bundle_trust(args.bundle, args.pubkey)  # refuse an unsigned bundle before timing it (#17)
    report = run_benchmark(args.bundle, settings)
    if args.json == "-":
        print_json(report)
    else:
        print(markdown_report(report))
        if args.json:
            import json

            write_report(args.json, json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
    if args.html:
        write_report(args.html, render_html(report, COLUMNS))
        if args.json != "-":
            print(f"wrote {args.html}")
    return 0 if report["cases"] else 1
