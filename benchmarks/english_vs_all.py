"""The README's "English-only heads vs all-language adapters" table, from the README's own three commands.

  python benchmarks/english_vs_all.py --data datasets/demo/manifest.jsonl --json benchmarks/english_vs_all.json

(a) `lugha train configs/english-only.yaml` (projections on English captions only), (b) `lugha train
configs/default.yaml` from (a)'s projections with LoRA on the text tower, all 16 languages, English drawn
4x its share, then `lugha eval (b) --split test --baseline (a) --json`: per language R@1 / R@5 of both runs,
the paired comparison on the same test items (difference with its Tango 95 % interval, exact McNemar
p-value Holm-corrected over every language x metric, verdict) and English retention. Runs (a) and (b) are
kept in --work (default runs/) and reused when already there (delete them to retrain). CPU: ~15 minutes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lugha.reports import write_report

REPO = Path(__file__).resolve().parents[1]


def lugha(*argv: str, capture: bool = False) -> str:
    proc = subprocess.run([sys.executable, "-m", "lugha.cli", *argv], check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return proc.stdout if capture else ""


def train_both(data: Path, work: Path) -> dict[str, float]:
    """(a) then (b), as the README writes them; seconds per run (0 when reused)."""
    english, all_langs = work / "english-only", work / "all-langs"
    seconds = {}
    for run, argv in (
        (english, ["train", str(REPO / "configs/english-only.yaml"), "--out", str(english),
                   "--set", f"data.manifest={data}"]),
        (all_langs, ["train", str(REPO / "configs/default.yaml"), "--out", str(all_langs),
                     "--set", f"data.manifest={data}", "--set", f"init_from={english}",
                     "--set", "data.language_weights={en: 4}", "--set", "loop.epochs=1",
                     "--set", "optim.warmup_steps=30"])):
        if (run / "best").is_dir():
            seconds[run.name] = 0.0
            continue
        t0 = time.monotonic()
        lugha(*argv, "--quiet")
        seconds[run.name] = round(time.monotonic() - t0, 1)
    return seconds


def table(report: dict, base: dict) -> list[dict]:
    """One row per language: R@1 / R@5 both ways for (a) and (b), and chance."""
    rows = []
    for lang, m in report["languages"].items():
        b = base["languages"][lang]
        rows.append({"lang": lang, **{f"a_{k}": round(100 * b[k], 1) for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")},
                     **{f"b_{k}": round(100 * m[k], 1) for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")},
                     "chance_r1": round(100 * m["chance_i2t_r1"], 1), "chance_r5": round(100 * m["chance_i2t_r5"], 1),
                     "n_images": m["n_images"], "n_texts": m["n_texts"]})
    return rows


def sign_tests(comparison: dict) -> dict:
    """Across the non-English languages, per metric: how many differences (b - a) are positive, and the
    exact two-sided sign test of "as many up as down" (scipy). One language's 149 items rarely decide a
    difference alone after Holm over every cell; whether (b) helps the languages as a group is this test."""
    from scipy.stats import binomtest

    out = {}
    for metric in sorted({r["metric"] for r in comparison["rows"]}):
        diffs = [r["diff_points"] for r in comparison["rows"] if r["metric"] == metric and r["lang"] != "en"]
        up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        out[metric] = {"languages": len(diffs), "up": up, "down": down,
                       "p_two_sided": binomtest(up, up + down, 0.5).pvalue if up + down else 1.0}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the demo manifest (lugha data demo --out DIR)")
    ap.add_argument("--work", type=Path, default=Path("runs"), help="where runs (a) and (b) go (default runs/)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    data, work = args.data.resolve(), args.work.resolve()
    seconds = train_both(data, work)
    english, all_langs = work / "english-only", work / "all-langs"
    report = json.loads(lugha("eval", str(all_langs), "--data", str(data), "--split", "test",
                              "--baseline", str(english), "--json", capture=True))
    base = json.loads(lugha("eval", str(english), "--data", str(data), "--split", "test", "--json", capture=True))
    non_en = [r for r in table(report, base) if r["lang"] != "en"]
    mean = lambda key: round(sum(r[key] for r in non_en) / len(non_en), 1)  # noqa: E731
    out = {"commands": {"a": "lugha train configs/english-only.yaml --out runs/english-only",
                        "b": "lugha train configs/default.yaml --out runs/all-langs --set init_from=runs/english-only "
                             "--set 'data.language_weights={en: 4}' --set loop.epochs=1 --set optim.warmup_steps=30",
                        "eval": "lugha eval runs/all-langs --split test --baseline runs/english-only --json"},
           "train_seconds": seconds, "rows": table(report, base),
           "non_english_mean_r1": {"a_i2t": mean("a_i2t_r1"), "b_i2t": mean("b_i2t_r1"),
                                   "a_t2i": mean("a_t2i_r1"), "b_t2i": mean("b_t2i_r1")},
           "comparison": report.get("comparison"), "retention": report.get("retention"),
           "verdicts": {v: sum(r["verdict"] == v for r in report["comparison"]["rows"])
                        for v in ("better", "worse", "no difference shown")},
           "sign_test_non_english": sign_tests(report["comparison"])}
    write_report(args.json, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
