"""`lugha eval`: a thin layer over :func:`lugha.training.evaluate.evaluate_run` (retrieval runs) and
:func:`lugha.training.classify_eval.evaluate_classify_run` (``task: classify`` runs); torch in run() only."""
from __future__ import annotations

import argparse

from lugha.cli._common import user_path

HELP = "Evaluate a training run: recall@k and label accuracy per language (fusion-head accuracy for classify runs)."
DESCRIPTION = """Evaluate a run on a split: image->text and text->image Recall@1/5/10 per language
(the images of that language's rows against its texts; several texts may match one image) and
averaged, zero-shot label accuracy (label names as text prompts), each next to its chance level.
With --baseline, both runs are evaluated on the same items and compared item by item, per language and
metric (R@1 both ways, label accuracy): the difference RUN - BASELINE in points with its 95% score
interval (Tango), the exact McNemar p-value Holm-corrected over every language x metric, and a verdict
(better / worse / no difference shown); English metrics are also reported as % of the baseline's.

  lugha eval runs/demo --split test
  lugha eval runs/demo --data data/other/manifest.jsonl --split test --json
  lugha eval runs/all-langs --split test --baseline runs/english-only   # per-language verdicts, English kept

Label prompts: per-language names from labels.json beside the manifest ({lang: {label: name}}) when
present, else the labels as written in the manifest (the demo: CLDR group names in English).

A classify run (`task: classify`, a fusion head) reports the head's label accuracy per language and,
for heads that skip a missing side (late, xattn), its accuracy with the text missing (image only) and
with the image missing (text only), next to the majority-class baseline of the run's training rows:

  lugha eval runs/late-fusion --split test
  lugha eval runs/late-fusion --data data/unseen-langs/manifest.jsonl --json   # cross-lingual transfer
"""
_COLS = [("i2t R@1", "i2t_r1"), ("i2t R@5", "i2t_r5"), ("i2t R@10", "i2t_r10"),
         ("t2i R@1", "t2i_r1"), ("t2i R@5", "t2i_r5"), ("t2i R@10", "t2i_r10"), ("label acc", "label_acc")]
RETAINED = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "label_acc")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=user_path, metavar="RUN", help="a run folder written by `lugha train`")
    parser.add_argument("--data", type=user_path, metavar="MANIFEST", help="JSONL manifest (default: the run's own)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test; '' = all rows)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default: best)")
    parser.add_argument("--languages", default="", help="comma-separated languages to keep (default: all)")
    parser.add_argument("--baseline", type=user_path, metavar="RUN0", help="report English metrics as %% of this run's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def _cell(m: dict, key: str) -> str:
    v = m.get(key)
    if v is None or v != v:
        return "-"
    return f"{100 * v:.1f} ({100 * m['chance_' + key]:.1f})"


def format_report(report: dict) -> str:
    from lugha.reports import format_table

    rows = []
    for lang, m in list(report["languages"].items()) + [("mean", report["mean"])]:
        row = {"lang": lang, "images": m.get("n_images", ""), "texts": m.get("n_texts", "")}
        row.update({name: _cell(m, key) for name, key in _COLS})
        rows.append(row)
    lines = [f"{report['run']} ({report['checkpoint']}) on {report['manifest']} split={report['split']!r}",
             "metrics in % (chance in brackets); labels: " + report["label_source"], format_table(rows)]
    if report.get("comparison"):
        lines += ["", format_comparison(report["comparison"])]
    if "retention" in report:
        r = report["retention"]
        lines.append(f"English retention vs {r['baseline']} (% of baseline kept):")
        lines.append(format_table([{"metric": k, "run": 100 * r["run"][k], "baseline": 100 * r["base"][k],
                                    "kept %": r["kept"][k]} for k in r["kept"]], floatfmt="{:.1f}"))
    return "\n".join(lines)


def format_comparison(comparison: dict) -> str:
    """The paired comparison with the baseline: one row per language x metric."""
    from lugha.reports import format_table

    rows = [{"lang": r["lang"], "metric": r["metric"], "run": f"{100 * r['run']:.1f}",
             "baseline": f"{100 * r['baseline']:.1f}", "diff": f"{r['diff_points']:+.1f}",
             "95% CI": f"{r['ci_low_points']:+.1f} to {r['ci_high_points']:+.1f}", "p (Holm)": f"{r['p_holm']:.3g}",
             "run only / base only / n": f"{r['run_only']} / {r['baseline_only']} / {r['n']}", "verdict": r["verdict"]}
            for r in comparison["rows"]]
    counts = {v: sum(r["verdict"] == v for r in comparison["rows"]) for v in ("better", "worse", "no difference shown")}
    return "\n".join([f"vs {comparison['baseline']} on the same items ({comparison['method']}): "
                      + ", ".join(f"{n} {v}" for v, n in counts.items()), format_table(rows)])


_CLASSIFY_COLS = [("acc", "acc"), ("image only", "acc_image_only"), ("text only", "acc_text_only"),
                  ("majority", "majority_acc")]


def format_classify_report(report: dict) -> str:
    from lugha.reports import format_table

    cols = [(name, key) for name, key in _CLASSIFY_COLS
            if any(key in m for m in report["languages"].values())]
    rows = []
    for lang, m in list(report["languages"].items()) + [("mean", report["mean"])]:
        row = {"lang": lang, "rows": m.get("n", "")}
        for name, key in cols:
            v = m.get(key, m.get(f"mean_{key}"))
            row[name] = "-" if v is None else f"{100 * v:.1f}"
        rows.append(row)
    missing = ("image only = text missing, text only = image missing (the head skips the missing side)"
               if report["skips_missing"] else f"no missing-modality columns: the {report['head']} head sees an "
               "all-zero side, it does not skip it")
    lines = [f"{report['run']} ({report['checkpoint']}) on {report['manifest']} split={report['split']!r}",
             f"{report['head']} fusion head, {len(report['classes'])} classes ({report['label_field']}); "
             f"accuracy in %; {missing}", format_table(rows)]
    if report.get("unknown_labels"):
        lines.append(f"{report['unknown_labels']} rows carry a label the head has no class for (counted wrong)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lugha.errors import ConfigError, DataError

    from lugha.reports import print_json

    from lugha.training.classify import is_classify_run
    from lugha.training.evaluate import evaluate_run, retention

    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    kw = dict(manifest=args.data, split=args.split, checkpoint=args.checkpoint, languages=langs,
              batch_size=args.batch_size)
    if is_classify_run(args.run_dir, args.checkpoint):
        from lugha.training.classify_eval import evaluate_classify_run

        if args.baseline:
            raise ConfigError("--baseline", "English retention compares retrieval runs; RUN is a classify run")
        report = evaluate_classify_run(args.run_dir, **kw)
        print_json(report) if args.json else print(format_classify_report(report))
        return 0
    report = evaluate_run(args.run_dir, **kw, items=bool(args.baseline))
    if args.baseline:
        from lugha.training.paired_stats import compare_runs

        base = evaluate_run(args.baseline, **{**kw, "manifest": args.data or report["manifest"]}, items=True)
        report["comparison"] = {"baseline": args.baseline, "method": "exact McNemar, Holm; Tango 95% CI",
                                "rows": compare_runs(report.pop("items"), base["items"], report.pop("item_ids"),
                                                     base["item_ids"])}
        report.pop("item_images", None)  # per-item detail, like items / item_ids: not part of the printed report
        if "en" not in report["languages"] or "en" not in base["languages"]:
            raise DataError(f"retention needs English ('en') rows in split {args.split!r} of {report['manifest']}")
        run_en, base_en = report["languages"]["en"], base["languages"]["en"]
        report["retention"] = {"baseline": args.baseline, "lang": "en", "run": {k: run_en[k] for k in RETAINED if k in run_en},
                               "base": {k: base_en[k] for k in RETAINED if k in base_en},
                               "kept": retention(run_en, base_en, [k for k in RETAINED if k in base_en])}
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0
