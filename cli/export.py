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

Each candidate also gets a pooled cell (all languages' items; an image's items in every language count as
one cluster, not as 16 independent items: the cluster t, never narrower than Tango's per-item interval, so
the row gives its images instead of a deciding n). --gate default blocks on any fail and on a
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


def configure(parser: argparse.ArgumentParser) -> None:
    from lugha.export.options import cli_fields

    parser.add_argument("run", type=user_path, metavar="RUN", help="training run folder (config.yaml, best/, last/)")
    parser.add_argument("--out", type=user_path, required=True, metavar="BUNDLE", help="bundle folder to create")
    # Every ExportOptions field with a flag, as the dataclass declares it (flag, help, parser, choices).
    for f in cli_fields():
        m = f.metadata
        if f.type in (bool, "bool"):
            parser.add_argument(m["flag"], dest=f.name, action="store_true", help=m["help"])
            continue
        kwargs = {k: m[k] for k in ("choices", "metavar") if m[k] is not None}
        parse = user_path if m["path"] else m["parse"]
        parser.add_argument(m["flag"], dest=f.name, default=f.default, help=m["help"],
                            **({"type": parse} if parse else {}), **kwargs)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    from lugha.reports import format_table, print_json

    from lugha.export.gates import ExportGateError
    from lugha.export.options import ExportOptions, cli_fields
    from lugha.export.pipeline import export_run
    from lugha.export.source import load_run_source
    from lugha.training.classify import is_classify_run

    opts = ExportOptions(**{f.name: getattr(args, f.name) for f in cli_fields()})
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
               "images": c.get("clusters") or "",
               "flips": f"{c['flip_rate']:.1%}", "decision": _SHORT[c["decision"]]} for c in report.get("accuracy_pooled", [])]
    g = report.get("gate", {})
    counts = g.get("counts", {})
    head = (f"accuracy gate: {g.get('policy')}, margin {g.get('max_drop_points')} points, items of "
            f"{'+'.join(g.get('splits', []))}; drop in points vs torch fp32 [90% CI] per language "
            f"({counts.get('pass', 0)} pass, {counts.get('undecided', 0)} undecided, {counts.get('fail', 0)} fail)")
    return "\n".join([head, format_table(list(rows.values()), ["candidate", "lang", *metrics]), "",
                      "pooled over all languages (must pass under --gate default):",
                      format_table(pooled, list(pooled[0]) if pooled else ["candidate"])])
