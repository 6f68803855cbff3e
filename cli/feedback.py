"""`lugha feedback`: what native speakers said in the field app, as data and as a report."""
from __future__ import annotations

import argparse
from pathlib import Path

from lugha.cli._common import user_path_obj

HELP = "Field-app judgments: export them as a dataset, or report human vs automatic accuracy."
DESCRIPTION = """The field app (`lugha serve`) stores consented judgments in a SQLite file. Turn them into a dataset
manifest for the next training round (corrected captions become new pairs, confirmed results become
confirmed pairs; images are copied beside the manifest), or report per language how often testers
judged the top result correct next to the bundle's automatic metric (the gap).

  lugha feedback export --db field.sqlite --out data/feedback/manifest.jsonl
  lugha data split data/feedback/manifest.jsonl --out data/feedback/split.jsonl
  lugha feedback report --db field.sqlite --bundle bundles/demo
  lugha feedback report --db field.sqlite --bundle bundles/demo --json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    exp = sub.add_parser("export", help="judgments -> dataset manifest (JSONL) + images",
                         description="Corrected captions become new pairs; results judged correct (and not "
                                     "inappropriate) become confirmed pairs. Wrong or inappropriate results "
                                     "without a better caption are counted, never exported.")
    exp.add_argument("--db", type=user_path_obj, required=True, help="the SQLite file `lugha serve --db` wrote")
    exp.add_argument("--out", type=user_path_obj, required=True, help="manifest to write (images go beside it)")
    exp.add_argument("--json", action="store_true", help="print the summary as JSON")
    exp.add_argument("--unreviewed", action="store_true",
                     help="also export judgments not yet approved in the admin page's review (anyone on the hotspot "
                          "can type a caption; by default only approved ones are exported, rejected ones never)")
    exp.set_defaults(_run=run_export)
    rep = sub.add_parser("report", help="human-judged accuracy per language vs the bundle's metric",
                         description="human_top1: share of judged rank-1 results judged correct (the human twin "
                                     "of R@1 / label accuracy); auto: the bundle manifest's metric for the same "
                                     "language; gap = human - auto.")
    rep.add_argument("--db", type=user_path_obj, required=True, help="the SQLite file `lugha serve --db` wrote")
    rep.add_argument("--bundle", type=user_path_obj, default=None, help="bundle whose manifest metrics to compare with")
    rep.add_argument("--precision", default=None, help="which precision's metrics (default int8, then fp32)")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.set_defaults(_run=run_report)


def run_export(args: argparse.Namespace) -> int:
    from lugha.runtimes.serve_feedback import export_feedback
    from lugha.reports import print_json

    summary = export_feedback(args.db, args.out, unreviewed=args.unreviewed)
    if args.json:
        print_json(summary)
        return 0
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(summary["skipped"].items())) or "none"
    print(f"wrote {summary['records']} records to {summary['manifest']} ({summary['corrected']} corrected, "
          f"{summary['confirmed']} confirmed; languages: {', '.join(summary['languages']) or '-'}); skipped: {skipped}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from lugha.manifest import load_bundle_manifest
    from lugha.runtimes.serve_feedback import feedback_report
    from lugha.reports import format_table, print_json

    manifest = load_bundle_manifest(args.bundle, verify=False) if args.bundle else None
    report = feedback_report(args.db, manifest, args.precision)
    if args.json:
        print_json(report)
        return 0
    cols = ["lang", "mode", "testers", "judgments", "top1_judged", "human_top1", "auto_metric", "auto", "gap",
            "appropriate", "better_captions"]
    print(format_table(report["rows"], cols))
    where = f" (metrics: {report['metrics_from']})" if report["metrics_from"] else ""
    print(f"{report['total']} judgments{where}")
    return 0
