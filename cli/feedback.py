"""`lugha feedback`: what native speakers said in the field app, as data and as a report."""
from __future__ import annotations

import argparse
from pathlib import Path

from lugha.cli._common import user_path, user_path_obj

HELP = "Field-app judgments: export them as a dataset, report a human-judgment study, or plan one."
DESCRIPTION = """The field app (`lugha serve`) stores consented judgments in a SQLite file. Turn them into a dataset
manifest for the next training round (corrected captions become new pairs, confirmed results become
confirmed pairs; images are copied beside the manifest); report a human-judgment study (accuracy with
intervals per language and tester group, agreement between testers, automatic score vs people, failure
modes, a model-card section); or plan one (which items each tester judges).

  lugha feedback export --db field.sqlite --out data/feedback/manifest.jsonl
  lugha data split data/feedback/manifest.jsonl --out data/feedback/split.jsonl
  lugha feedback report --db field.sqlite --bundle bundles/demo
  lugha feedback report field.sqlite --json report.json --html report.html --model-card card.md
  lugha feedback plan --testers 5 --items 60 --out plan.json --csv plan.csv
"""

REPORT_DESCRIPTION = """What a human-judgment study needs, per language and per tester group (the language each
tester consented as):
  - human accuracy (share of judged results judged correct) and the share judged culturally
    appropriate, with 95% intervals (--ci wilson, or beta = Clopper-Pearson);
  - agreement between testers on items judged by two or more of them: Krippendorff's alpha (nominal),
    1 = perfect, 0 = chance; bootstrap interval over items;
  - does the automatic score agree with people? Spearman's rho of each item's score against the share
    of its testers who judged it correct, and the point-biserial r against the majority verdict;
  - failure modes: items judged correct but culturally inappropriate;
  - with --bundle, the older table: human top-1 accuracy next to the bundle's metric, and the gap.
An item is one (mode, language, query, result): the same photo (by SHA-256) or typed text, answered with
the same label or image. Scores default to the one the served model gave; --scores FILE brings your own
(CSV header mode,lang,query,result,score or JSONL objects with those keys; query = the photo's SHA-256
or the typed text; higher = more right, e.g. a similarity or a 0/1 R@1 hit).

  lugha feedback report field.sqlite
  lugha feedback report field.sqlite --json report.json --html report.html --model-card card.md
  lugha feedback report field.sqlite --scores eval_scores.csv --ci beta --json
"""

PLAN_DESCRIPTION = """Choose which items each tester judges so that every item is judged by --judges (3) different
testers, items are spread evenly over languages and, within a language, over labels, and each tester's
load is within one item of the others'. --testers 5: anyone judges any language; --testers sw=3,yo=3:
native-speaker pools, each judging its own language. Each tester's list is in a seeded random order. The
plan gives each item's image SHA-256: a photo uploaded unchanged to the field app is stored under that
hash, so `lugha feedback report` sees the testers' judgments of one item together.

  lugha feedback plan --testers 5 --items 60
  lugha feedback plan --testers sw=4,yo=4 --items 40 --out plan.json --csv plan.csv
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
    rep = sub.add_parser("report", help="a human-judgment study: accuracy, agreement, score vs people, failure modes",
                         formatter_class=argparse.RawDescriptionHelpFormatter, description=REPORT_DESCRIPTION)
    rep.add_argument("db_path", nargs="?", type=user_path_obj, metavar="DB", help="the SQLite file `lugha serve --db` wrote")
    rep.add_argument("--db", type=user_path_obj, default=None, help="the same, as an option (older spelling)")
    rep.add_argument("--bundle", type=user_path_obj, default=None, help="bundle whose manifest metrics to compare with")
    rep.add_argument("--precision", default=None, help="which precision's metrics (default int8, then fp32)")
    rep.add_argument("--scores", type=user_path_obj, default=None, metavar="FILE",
                     help="automatic score per item (CSV or JSONL: mode,lang,query,result,score); "
                          "default: the score the served model gave, from the database")
    rep.add_argument("--plan", type=user_path_obj, default=None, metavar="PLAN.json",
                     help="the study plan (`lugha feedback plan --out`): also report which items still lack judges")
    rep.add_argument("--json", nargs="?", const="-", default=None, type=user_path, metavar="OUT",
                     help="the report as JSON: to OUT, or to stdout when OUT is left out")
    rep.add_argument("--html", type=user_path_obj, default=None, metavar="OUT", help="an HTML page with plots")
    rep.add_argument("--model-card", type=user_path_obj, default=None, metavar="OUT",
                     help="the model card's 'Human judgment' section (Markdown) to OUT")
    rep.add_argument("--ci", choices=("wilson", "beta"), default="wilson",
                     help="interval of rates: wilson (default) or beta (Clopper-Pearson exact)")
    rep.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                     help="resamples for the alpha and rho intervals (default 1000; 0 = no interval)")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    rep.set_defaults(_run=run_report)
    plan = sub.add_parser("plan", help="which items each tester judges (>= 3 judges per item, balanced)",
                          formatter_class=argparse.RawDescriptionHelpFormatter, description=PLAN_DESCRIPTION)
    plan.add_argument("--testers", default="5", help="a count (5: anyone judges any language) or pools per "
                                                     "language (sw=3,yo=3: native speakers only); default 5")
    plan.add_argument("--items", type=int, default=60, help="items to judge (default 60)")
    plan.add_argument("--judges", type=int, default=3, help="different testers per item (default 3)")
    plan.add_argument("--manifest", type=user_path_obj, default="datasets/demo/manifest.jsonl",
                      metavar="M", help="dataset manifest to draw items from (default datasets/demo/manifest.jsonl)")
    plan.add_argument("--split", default="test", help="split to draw from (default test; '' = all rows)")
    plan.add_argument("--languages", default="", help="comma-separated languages (default: all, or the pools')")
    plan.add_argument("--mode", choices=("image", "text"), default="image",
                      help="image: testers query with the item's image (default); text: with its caption")
    plan.add_argument("--seed", type=int, default=0, help="which items and which order (default 0)")
    plan.add_argument("--out", type=user_path_obj, default=None, metavar="PLAN.json", help="write the plan as JSON")
    plan.add_argument("--csv", type=user_path_obj, default=None, metavar="OUT.csv",
                      help="write one row per (tester, item), in each tester's order")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(_run=run_plan)


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
    from lugha.data import feedback_report as fr
    from lugha.errors import ConfigError
    from lugha.manifest import load_bundle_manifest
    from lugha.reports import format_table, print_json
    from lugha.runtimes.serve_feedback import feedback_report

    db = args.db_path or args.db
    if db is None:
        raise ConfigError("feedback report", "name the database first: lugha feedback report field.sqlite --json "
                                             "(--json takes an optional file name, so a DB after it is read as that)")
    manifest = load_bundle_manifest(args.bundle, verify=False) if args.bundle else None
    vs_bundle = feedback_report(db, manifest, args.precision)
    # the human-vs-bundle table keeps its top-level keys (rows, metrics_from, total); the study adds its own
    plan = _read_plan(args.plan) if args.plan else None
    report = {**vs_bundle, **fr.build_report(db, args.scores, args.ci, args.bootstrap, args.seed, plan)}
    json_out = None if args.json in (None, "-") else Path(args.json)
    written = fr.write_outputs(report, json_out, args.html, args.model_card)
    if args.json == "-":
        print_json(report)
        return 0
    cols = ["lang", "mode", "testers", "judgments", "top1_judged", "human_top1", "auto_metric", "auto", "gap",
            "appropriate", "better_captions"]
    print(format_table(report["rows"], cols))
    where = f" (metrics: {report['metrics_from']})" if report["metrics_from"] else ""
    print(f"{report['total']} judgments{where}\n")
    acc = ["judgments", "items", "testers", "accuracy", "low", "high", "appropriate", "appropriate_low", "appropriate_high"]
    print(format_table(report["by_lang"], ["lang", *acc]) + "\n")
    print(format_table(report["by_group"], ["group", *acc]) + "\n")
    print("agreement on 'correct' (Krippendorff's alpha, nominal; items judged by 2+ testers):")
    print(format_table(report["agreement"]["correct"]["by_lang"], ["lang", "units", "coders", "alpha", "low", "high"]))
    print(f"\nautomatic score vs share judged correct ({report['score_source']}):")
    print(format_table(fr.flat(report["correlation"]), ["lang", "items", "sp_rho", "sp_p", "sp_low", "sp_high",
                                                        "po_r", "po_p"]))
    print(f"\n{len(report['failure_modes'])} item(s) judged correct but culturally inappropriate"
          + ("".join(f"\n  {m['lang']} {m['mode']} {m['query'][:24]} -> {m['result']} "
                     f"({m['correct_but_inappropriate']}/{m['judgments']})" for m in report["failure_modes"][:10])))
    if plan:
        pp = report["plan_progress"]
        print(f"\nplan: {pp['items_complete']} of {pp['plan_items']} items judged by {pp['judges_per_item']}+ testers; "
              f"{pp['items_unjudged']} not judged yet; {pp['judgments_off_plan']} judgment(s) of unplanned queries")
    for path in written:
        print(f"wrote {path}")
    return 0


def _read_plan(path: Path) -> dict:
    import json

    from lugha.data.study_plan import SCHEMA
    from lugha.errors import DataError

    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable study plan ({e})") from None
    if plan.get("schema") != SCHEMA:
        raise DataError(f"{path}: schema {plan.get('schema')!r}, expected {SCHEMA!r} (write it with `lugha feedback plan --out`)")
    return plan


def run_plan(args: argparse.Namespace) -> int:
    from lugha.data.study_plan import make_plan, plan_csv
    from lugha.reports import format_table, print_json, write_report
    import json

    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    plan = make_plan(args.manifest, args.testers, args.items, args.judges, args.split, langs, args.mode, args.seed)
    if args.out:
        write_report(args.out, json.dumps(plan, ensure_ascii=False, indent=1) + "\n")
    if args.csv:
        write_report(args.csv, plan_csv(plan))
    if args.json:
        print_json(plan)
        return 0
    cov = plan["coverage"]
    print(format_table([{"tester": t["tester"], "tester_lang": t["tester_lang"], "items": len(t["items"]),
                         "languages": len({i["lang"] for i in plan["items"] if i["item"] in set(t["items"])})}
                        for t in plan["testers"]]))
    print(f"\n{cov['items']} items, each judged by {cov['min_judges']}-{cov['max_judges']} testers "
          f"({cov['assignments']} judgments); items per language: "
          + ", ".join(f"{k} {v}" for k, v in cov["items_per_lang"].items()))
    for path in filter(None, (args.out, args.csv)):
        print(f"wrote {path}")
    return 0
