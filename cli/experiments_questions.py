"""`lugha experiments baselines | transfer | forgetting`: the survey's research questions as commands, each
writing OUT/<name>.json and OUT/<name>.html (torch is imported in the run functions only)."""
from __future__ import annotations

import argparse
import sys

from lugha.cli._common import user_path

COMMON = """
Every comparison is paired on the same test items: the difference with Tango's 95 % interval, the exact
McNemar test, Holm-corrected over the comparisons of one family (lugha.training.paired_stats, the
export gate's statistics), never a bare difference. --quick: a smaller budget that runs on the demo on a
CPU in minutes (after the one-off feature caching); the same command runs on your own manifest unchanged.
Writes OUT/{name}.json (schema: docs/experiments.md) and OUT/{name}.html (inline SVG plots, no network).
"""

BASELINES = """Does the image help? Text alone vs text + image, on a learning curve, per language.

  lugha experiments baselines --data datasets/demo/manifest.jsonl --quick
  lugha experiments baselines --data my/manifest.jsonl --sizes 250,500,1000 --label-field label

Both arms train the same small head on frozen, cached tower features: `text` sees the image as missing
(the frozen multilingual text tower + a small head), `fusion` sees both towers (+ a trained fusion
layer). Each trains on the first N labelled training pairs of one seeded order, for N in --sizes
(nested: a learning curve). Table and plot: accuracy per language per arm, and the gain of the image.
""" + COMMON.format(name="baselines")

TRANSFER = """Which source language helps a target? Does a close source beat English?

  lugha experiments transfer --data datasets/demo/manifest.jsonl --quick
  lugha experiments transfer --data my/manifest.jsonl --sources en,sw,am --targets ha,yo,ti

One adapter per source language (default: projection, towers frozen; --adapter lora trains the text
tower too), trained on that language alone, tested on every target: a source x target heatmap of R@1.
Per target, the best other source (chosen on --select-split, not on the test split) against English as
the source, and each language's ISO 15924 script and Glottolog family. Runs go under --work (default
OUT/work-transfer); a rerun with the same settings reuses them.
""" + COMMON.format(name="transfer")

FORGETTING = """Adaptation vs retention: how much English does adapting to the targets cost?

  lugha experiments forgetting --data datasets/demo/manifest.jsonl --quick
  lugha experiments forgetting --data my/manifest.jsonl --grid "rank=4,16;lr=2e-4,1e-3;steps=100,300"

An English source model (projection adapter), then LoRA adapted to the target languages for every
(rank, lr, steps) of --grid, and a reference LoRA trained on all the target data. Plot: English kept
(% of the source) against target reached (% of the reference), with the survey's thresholds (--keep
0.95, --reach 0.80); the report says which settings meet both, by point estimate and as shown by the
paired non-inferiority cells of the export gate. Runs go under --work (default OUT/work-forgetting); a
rerun with the same settings reuses them.
""" + COMMON.format(name="forgetting")


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--data", type=user_path, required=True, metavar="MANIFEST", help="JSONL manifest with train/test splits")
    p.add_argument("--model", default=None, help="model config name (default: lowclip-lite0-e5small)")
    p.add_argument("--out", type=user_path, default="lugha-experiments", metavar="DIR",
                   help=f"where {name}.json and {name}.html go (default: ./lugha-experiments)")
    if name != "baselines":  # baselines trains heads in memory: no run folders
        p.add_argument("--work", type=user_path, default=None, metavar="DIR",
                       help=f"the trained runs, reused by a rerun with the same settings (default: OUT/work-{name})")
    p.add_argument("--quick", action="store_true", help="the small budget (CI, a first look)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--cache-dir", type=user_path, default=None, help="feature cache folder (default: LUGHA_HOME/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    p.add_argument("--json", action="store_true", help="print the report as JSON too")


def configure_questions(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("baselines", help="text-only vs text + image, learning curve, per language",
                       description=BASELINES, formatter_class=fmt)
    _common(p, "baselines")
    p.add_argument("--sizes", default="500,1000,2000", help="training pairs per arm (default: 500,1000,2000)")
    p.add_argument("--languages", default="", help="languages to train and test (default: all)")
    p.add_argument("--label-field", default="label", choices=("label", "subgroup"))
    p.add_argument("--head", default="early", choices=("early", "late", "prototype"))
    p.add_argument("--steps", type=int, default=None, help="steps per head (default 600; --quick 300)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init-from", type=user_path, default=None, metavar="RUN", help="a retrieval run whose projections to use")
    p.set_defaults(_run=run_baselines_cmd)

    p = sub.add_parser("transfer", help="source x target R@1 matrix; best source vs English",
                       description=TRANSFER, formatter_class=fmt)
    _common(p, "transfer")
    p.add_argument("--sources", default="", help="source languages (default: every language of the train split)")
    p.add_argument("--targets", default="", help="target languages (default: every language of the test split)")
    p.add_argument("--english", default="en", help="the language 'English as source' means (default: en)")
    p.add_argument("--adapter", default="projection", choices=("projection", "lora"))
    p.add_argument("--metric", default="t2i_r1", choices=("t2i_r1", "i2t_r1"))
    p.add_argument("--select-split", default="val", help="split the best source is chosen on (default: val)")
    p.add_argument("--steps", type=int, default=None, help="steps per source (default 300; --quick 60)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.set_defaults(_run=run_transfer_cmd)

    p = sub.add_parser("forgetting", help="LoRA grid: English retention vs target gain",
                       description=FORGETTING, formatter_class=fmt)
    _common(p, "forgetting")
    p.add_argument("--source", default="en", help="the source language (default: en)")
    p.add_argument("--targets", default="", help="target languages (default: every other train language)")
    p.add_argument("--grid", default=None, help='"rank=4,16;lr=2e-4,1e-3;steps=100,300" (the default; '
                                                '--quick: rank=2,8;lr=2e-4,1e-3;steps=20)')
    p.add_argument("--metric", default="t2i_r1", choices=("t2i_r1", "i2t_r1"))
    p.add_argument("--keep", type=float, default=0.95, help="English kept, fraction of the source (default 0.95)")
    p.add_argument("--reach", type=float, default=0.80, help="target reached, fraction of the reference (default 0.80)")
    p.add_argument("--source-steps", type=int, default=None, help="steps of the English source (default 300; --quick 100)")
    p.add_argument("--reference-lr", type=float, default=1e-3)
    p.add_argument("--reference-epochs", type=int, default=1, help="passes of the reference over the target data")
    p.add_argument("--reference-max-steps", type=int, default=None, help="cap on the reference (--quick: 60)")
    p.set_defaults(_run=run_forgetting_cmd)


def _say(args):
    quiet = args.quiet or args.json
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr)), not quiet


def _finish(args, report: dict, html: str, name: str) -> int:
    import os

    from lugha.reports import print_json
    from lugha.training.exp_common import write_outputs

    paths = write_outputs(report, html, args.out, name)
    if args.json:
        print_json(report)
    elif not args.quiet:
        print(f"{name}: {os.path.relpath(paths['json'])}, {os.path.relpath(paths['html'])} "
              f"(plots: {', '.join(os.path.basename(p) for p in paths['svg'])})")
        print(_headline(report))
    return 0


def _headline(report: dict) -> str:
    s = report["summary"]
    if report["experiment"] == "baselines":
        return "\n".join(f"{n} pairs: image gain {v['pooled_gain_points']:+.1f} points [{v['pooled_ci_points'][0]:+.1f}, "
                         f"{v['pooled_ci_points'][1]:+.1f}] pooled ({v['pooled_verdict']}); per language better "
                         f"{v['better']}, worse {v['worse']}, no difference shown {v['no_difference_shown']}"
                         for n, v in s.items())
    if report["experiment"] == "transfer":
        return (f"{s['targets']} targets: English the best source for {s['english_best']}; best other source vs English "
                f"(Holm): better {s['best_beats_english']}, worse {s['best_worse_than_english']}, no difference shown "
                f"{s['no_difference_shown']}; a close best source beat English for {s['close_source_beats_english']}")
    return (f"{s['settings']} settings; meet both thresholds (point estimate): {', '.join(s['meet_both_point']) or 'none'}; "
            f"shown by the paired cells: {', '.join(s['meet_both_shown']) or 'none'}")


def _work(args, name: str) -> str:
    import os

    return args.work or os.path.join(args.out, f"work-{name}")


def run_baselines_cmd(args: argparse.Namespace) -> int:
    from lugha.config import DEFAULT_MODEL
    from lugha.training.exp_baselines import BaselinesExperiment, render_html, run_baselines
    from lugha.training.exp_common import Budget

    budget = Budget(steps=args.steps or (300 if args.quick else 600), batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, threads=args.threads)
    sizes = tuple(int(x) for x in _list(args.sizes))
    exp = BaselinesExperiment(manifest=args.data, model=args.model or DEFAULT_MODEL, languages=_list(args.languages),
                              sizes=sizes, label_field=args.label_field, head=args.head, budget=budget,
                              init_from=args.init_from, cache_dir=args.cache_dir)
    say, progress = _say(args)
    report = run_baselines(exp, say=say, show_progress=progress)
    report["protocol"]["command"] = _command()
    return _finish(args, report, render_html(report), "baselines")


def run_transfer_cmd(args: argparse.Namespace) -> int:
    from lugha.config import DEFAULT_MODEL
    from lugha.training.exp_common import Budget
    from lugha.training.exp_transfer import TransferExperiment, render_html, run_transfer

    budget = Budget(steps=args.steps or (60 if args.quick else 300), batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, threads=args.threads)
    exp = TransferExperiment(manifest=args.data, work_dir=_work(args, "transfer"), model=args.model or DEFAULT_MODEL,
                             sources=_list(args.sources), targets=_list(args.targets), english=args.english,
                             adapter=args.adapter, metric=args.metric, select_split=args.select_split, budget=budget,
                             cache_dir=args.cache_dir)
    say, progress = _say(args)
    report = run_transfer(exp, say=say, show_progress=progress)
    report["protocol"]["command"] = _command()
    return _finish(args, report, render_html(report), "transfer")


def run_forgetting_cmd(args: argparse.Namespace) -> int:
    from lugha.config import DEFAULT_MODEL
    from lugha.training.exp_common import Budget
    from lugha.training.exp_forgetting import QUICK_GRID, ForgettingExperiment, parse_grid, render_html, run_forgetting

    grid = parse_grid(args.grid) if args.grid else dict(QUICK_GRID if args.quick else parse_grid(""))
    exp = ForgettingExperiment(
        manifest=args.data, work_dir=_work(args, "forgetting"), model=args.model or DEFAULT_MODEL, source=args.source,
        targets=_list(args.targets), grid=grid, metric=args.metric, keep=args.keep, reach=args.reach,
        source_budget=Budget(steps=args.source_steps or (100 if args.quick else 300), lr=2e-3),
        batch_size=args.batch_size, seed=args.seed, threads=args.threads, reference_lr=args.reference_lr,
        reference_epochs=args.reference_epochs,
        reference_max_steps=args.reference_max_steps or (60 if args.quick else None), cache_dir=args.cache_dir)
    say, progress = _say(args)
    report = run_forgetting(exp, say=say, show_progress=progress)
    report["protocol"]["command"] = _command()
    return _finish(args, report, render_html(report), "forgetting")


def _command() -> str:
    """The command as typed, for the report's provenance (paths as the user wrote them)."""
    import os
    import shlex

    return " ".join(["lugha"] + [shlex.quote(a) for a in sys.argv[1:]]) if os.path.basename(sys.argv[0]) in (
        "lugha", "__main__.py") else ""
