"""`lugha export`: a thin layer over :func:`lugha.export.pipeline.export_run` (torch imported in run() only)."""
from __future__ import annotations

import argparse
import sys

from lugha.cli._common import user_path

HELP = "Export a run to ONNX/TFLite, quantize, gate on parity and accuracy, pack a bundle."
DESCRIPTION = """Export a training run (the folder `lugha train --out RUN` made) as a bundle a device can run:
the image tower + projection and the text tower + projection (and a fusion head, if the run trained one)
as separate graphs, quantized, each checked against PyTorch on golden samples (parity) and per language
on held-out items (R@1 both ways, label accuracy): the accuracy gate pairs each item's outcome under
PyTorch fp32 and under the candidate and decides every candidate x language x metric cell with
statistics, against the margin --max-drop (points):

  fail       the drop is significantly above the margin (exact binomial / Tango score test, Holm over all
             cells of the export)
  pass       the one-sided 95% upper bound of the drop is below the margin
  undecided  neither: the row says the smallest drop this many items can detect and the n that would decide

Each candidate also gets a pooled cell (all languages' items). --gate default blocks on any fail and on a
pooled cell that is not a pass; --gate strict also on any undecided cell; --allow-drop reports and blocks
nothing (the manifest and MODEL_CARD.md say so). A blocked export exits non-zero, prints every failing
cell, and leaves NO bundle behind. --gate-splits (default val,test) pools the held-out splits' items.

  lugha export runs/demo --out bundles/demo                            # ONNX fp32 + int8
  lugha export runs/demo --out bundles/demo --formats onnx,tflite --precision fp32,fp16,int8
  lugha export runs/demo --out bundles/small --precision int8 --trim-vocab --zip
  lugha export runs/demo --out bundles/demo --calib-samples 256 --calib-method entropy
  lugha export runs/demo --out bundles/demo --sign keys/publisher.pem  # ed25519 signature of the manifest
  lugha bundle verify bundles/demo --pubkey keys/publisher.pub.pem
  (keys: openssl genpkey -algorithm ed25519 -out publisher.pem
         openssl pkey -in publisher.pem -pubout -out publisher.pub.pem)

A classify run (`task: classify`) exports its fusion head as a third graph, `fusion_head` (output
`logits`, the class names in its manifest entry), kept float in every precision. Its label accuracy per
language, through each candidate's three graphs, is gated like the encoders' metrics (`head_acc`); the
image-only / text-only accuracies of late and cross-attention heads are reported beside it. A
cross-attention head reads patch and token features, so its bundle's image and text encoders get a
second output (`image_patches`, `text_tokens`); such bundles are ONNX only.

  lugha export runs/late-fusion --out bundles/late --precision fp32,int8

int8: the text tower is quantized dynamically (weights, embedding table per row), the image tower
statically (QDQ per channel) on real training images from the run's manifest. Before int8 the
quantization advisor looks for layers known to quantize badly (SiLU + squeeze-excite as in
EfficientNet-B0, L2 norms, softmax in heads) and, with --int8-policy keep-float (default), keeps them
in float. TFLite graphs are static: batch 1, text at fixed sequence lengths (--seq-lengths).
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=user_path, metavar="RUN", help="training run folder (config.yaml, best/, last/)")
    parser.add_argument("--out", type=user_path, required=True, metavar="BUNDLE", help="bundle folder to create")
    parser.add_argument("--formats", type=_csv, default=("onnx",), help="onnx,tflite (default: onnx)")
    parser.add_argument("--precision", type=_csv, default=("fp32", "int8"), dest="precisions",
                        help="any of fp32,fp16,int8 (default: fp32,int8)")
    parser.add_argument("--max-drop", type=float, default=1.0,
                        help="the accuracy gate's margin: per-language drop vs fp32 in points (default 1.0)")
    parser.add_argument("--gate", choices=("default", "strict"), default="default",
                        help="default: block on a failed cell or a pooled cell that is not a pass; strict: also on "
                             "any undecided cell")
    parser.add_argument("--gate-splits", type=_csv, default=("val", "test"), metavar="SPLITS",
                        help="held-out splits whose items the accuracy gate pools (default val,test)")
    parser.add_argument("--allow-drop", action="store_true",
                        help="report the accuracy gate but block nothing (recorded in the manifest and model card)")
    parser.add_argument("--trim-vocab", action="store_true",
                        help="keep only the token ids the training text uses (smaller embedding table)")
    parser.add_argument("--calib-samples", type=int, default=128, metavar="N",
                        help="training images for image int8 calibration (default 128)")
    parser.add_argument("--calib-texts", type=int, default=512, metavar="N",
                        help="training texts for per-token text int8 calibration (default 512)")
    parser.add_argument("--text-int8", choices=("per-token", "per-token-fine", "dynamic"), default="per-token",
                        help="text int8: per-token (SmoothQuant + per-token activations + GPTQ weights; default), "
                             "per-token-fine (ONNX: activations in two 8-bit passes, near-fp32 accuracy, ~fp32 "
                             "batch-1 speed, 4x smaller) or dynamic (stock quantizers, no calibration: ONNX "
                             "quantize_dynamic, one activation scale per tensor; TFLite without smoothing)")
    parser.add_argument("--calib-method", choices=("percentile", "entropy", "minmax"), default="percentile")
    parser.add_argument("--int8-policy", choices=("keep-float", "w8a16", "as-is"), default="keep-float",
                        help="what to do with layers the advisor flags (default keep-float)")
    parser.add_argument("--int8-rounding", choices=("gptq", "kernel_sum", "nearest"), default="gptq",
                        help="image int8 weight rounding: gptq (on the calibration images; default), kernel_sum, "
                             "nearest")
    parser.add_argument("--int8-float-stem", default="auto", metavar="auto|N",
                        type=lambda s: s if s == "auto" else int(s),
                        help="image convs kept float: auto (up to the first residual add; default), N first convs, 0")
    parser.add_argument("--seq-lengths", type=lambda s: tuple(int(x) for x in _csv(s)), default=(),
                        help="TFLite text signatures, e.g. 16,64 (default: 16 and the model's max_length)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--eval-split", default="test",
                        help="split whose metrics the manifest and model card report (falls back to val)")
    parser.add_argument("--eval-limit", type=int, default=0, metavar="N", help="at most N eval rows per language")
    parser.add_argument("--zip", action="store_true", help="also write BUNDLE.zip")
    parser.add_argument("--sign", type=user_path, metavar="KEY", help="ed25519 private key (PEM) to sign manifest.json with")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing BUNDLE")
    parser.add_argument("--legacy-onnx", action="store_true", help="use the TorchScript ONNX exporter, not dynamo")
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    from lugha.reports import format_table, print_json

    from lugha.export.gates import ExportGateError
    from lugha.export.pipeline import ExportOptions, export_run
    from lugha.export.source import load_run_source
    from lugha.training.classify import is_classify_run

    opts = ExportOptions(formats=args.formats, precisions=args.precisions, max_drop=args.max_drop,
                         allow_drop=args.allow_drop, gate=args.gate, gate_splits=args.gate_splits, trim_vocab=args.trim_vocab, calib_samples=args.calib_samples,
                         calib_texts=args.calib_texts, text_int8=args.text_int8,
                         calib_method=args.calib_method, int8_policy=args.int8_policy,
                         int8_rounding=args.int8_rounding, int8_float_stem=args.int8_float_stem,
                         seq_lengths=args.seq_lengths,
                         eval_split=args.eval_split, eval_limit=args.eval_limit, zip=args.zip, sign_key=args.sign,
                         overwrite=args.overwrite, force_legacy_onnx=args.legacy_onnx)
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    if is_classify_run(args.run, args.checkpoint):
        from lugha.export.fusion_head import load_classify_source

        source = load_classify_source(args.run, args.checkpoint)
    else:
        source = load_run_source(args.run, args.checkpoint)
    try:
        result = export_run(source, args.out, opts, say=say)
    except ExportGateError as e:
        _print_report(e.report, args, format_table, print_json, failed=True)
        print(f"lugha export: error: {e}", file=sys.stderr)
        return 1
    _print_report(result.report, args, format_table, print_json)
    if not args.json:
        print(f"bundle: {result.bundle} ({result.report['bundle_bytes'] / 1e6:.2f} MB)"
              + (f", zip: {result.zip}" if result.zip else "") + f"; check it: lugha bundle verify {result.bundle}")
    return 0


def _print_report(report: dict, args, format_table, print_json, failed: bool = False) -> None:
    if args.json:
        print_json({"ok": not failed, **report})
        return
    out = sys.stderr if failed else sys.stdout
    if report.get("graphs"):
        print(format_table(report["graphs"], ["key", "size_mb", "scheme"]), file=out)
    if report.get("parity"):
        print(file=out)
        print(format_table(report["parity"], ["graph", "output", "max_abs", "allowed_max_abs", "min_cosine",
                                              "required_cosine", "ok"], floatfmt="{:.6g}"), file=out)
    if report.get("accuracy"):
        print(file=out)
        print(format_gate_table(report), file=out)
    for line in report.get("advisor", []):
        print(f"advisor: {line}", file=out)
    for line in report.get("failures", []):
        print(f"FAILED: {line}", file=out)


_SHORT = {"pass": "pass", "undecided": "undecided", "fail": "FAIL"}


def format_gate_table(report: dict) -> str:
    """One row per candidate x language, a column per metric: drop [90% CI] decision; then the pooled
    cells in full and the gate's summary line."""
    from lugha.reports import format_table

    metrics = list(dict.fromkeys(c["metric"] for c in report["accuracy"]))
    rows: dict[tuple[str, str], dict] = {}
    for c in report["accuracy"]:
        row = rows.setdefault((c["candidate"], c["lang"]), {"candidate": c["candidate"], "lang": c["lang"]})
        row[c["metric"]] = (f"{c['drop_points']:+.2f} [{c['ci_low_points']:+.1f},{c['ci_high_points']:+.1f}] "
                            f"{_SHORT[c['decision']]}")
    pooled = [{"candidate": c["candidate"], "metric": c["metric"], "drop": f"{c['drop_points']:+.2f}",
               "90% CI": f"{c['ci_low_points']:+.2f} to {c['ci_high_points']:+.2f}", "p": f"{c['p_value']:.3g}",
               "p Holm": f"{c['p_holm']:.3g}", "lost/gained/n": f"{c['lost']}/{c['gained']}/{c['n']}",
               "flips": f"{c['flip_rate']:.1%}", "decision": _SHORT[c["decision"]]} for c in report.get("accuracy_pooled", [])]
    g = report.get("gate", {})
    counts = g.get("counts", {})
    head = (f"accuracy gate: {g.get('policy')}, margin {g.get('max_drop_points')} points, items of "
            f"{'+'.join(g.get('splits', []))}; drop in points vs torch fp32 [90% CI] per language "
            f"({counts.get('pass', 0)} pass, {counts.get('undecided', 0)} undecided, {counts.get('fail', 0)} fail)")
    return "\n".join([head, format_table(list(rows.values()), ["candidate", "lang", *metrics]), "",
                      "pooled over all languages (must pass under --gate default):",
                      format_table(pooled, list(pooled[0]) if pooled else ["candidate"])])
