"""A SIMULATED human-judgment study on the demo data: the README's "Human judgment" numbers.

    python benchmarks/human_judgment_sim.py --manifest datasets/demo/manifest.jsonl \
        --out benchmarks/human_judgment_sim.json --svg benchmarks/human_judgment_sim.svg

No person judged anything here. `lugha feedback plan` chooses 60 demo test items (4 languages) for 5
testers, 3 judges each; simulated testers (lugha.data.study_sim) copy a hidden truth with a 10% chance of
flipping each verdict (so the expected Krippendorff's alpha is known); the model's accuracy is set per
language, its automatic score is drawn higher for right results. The judgments go into a real field-app
database through the server's own layer (runtimes/serve_db.py), and `lugha feedback report`'s library
reads them back. The point is to show the analysis and check it recovers what was put in, not to
measure a model.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SETTINGS = {"testers": "5", "items": 60, "judges": 3, "languages": ["am", "ha", "sw", "yo"], "split": "test",
            "flip": 0.1, "accuracy": {"am": 0.5, "ha": 0.6, "sw": 0.8, "yo": 0.7}, "inappropriate": 0.05,
            "score_gap": 0.2, "score_noise": 0.1, "seed": 0, "bootstrap": 1000}


def run(manifest: Path) -> tuple[dict, dict]:
    from lugha.data.feedback_report import ALL, build_report
    from lugha.data.study_plan import make_plan
    from lugha.data.study_sim import expected_alpha, simulate_study
    from lugha.runtimes.serve_db import FeedbackDB

    s = SETTINGS
    plan = make_plan(manifest, s["testers"], s["items"], s["judges"], s["split"], s["languages"], seed=s["seed"])
    rows, truth = simulate_study(plan, s["flip"], s["accuracy"], s["inappropriate"], s["score_gap"],
                                 s["score_noise"], seed=s["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "field.sqlite"
        with FeedbackDB(db_path) as db:
            for t in plan["testers"]:
                db.record_consent(f"sim-{t['tester']}", "any")
            for item in plan["items"]:
                db.save_upload(f"sim-{item['testers'][0]}", Path(item["image"]).read_bytes(), "png", 128, 128)
            for row in rows:
                db.add_feedback(**row)
        report = build_report(db_path, n_boot=s["bootstrap"], seed=s["seed"])
    prevalence = sum(t["correct"] for t in truth.values()) / len(truth)
    true_acc = {lang: round(sum(truth[i["item"]]["correct"] for i in plan["items"] if i["lang"] == lang)
                            / sum(i["lang"] == lang for i in plan["items"]), 4) for lang in s["languages"]}
    alpha = {r["lang"]: r for r in report["agreement"]["correct"]["by_lang"]}
    corr = {r["lang"]: r for r in report["correlation"]}
    out = {
        "simulated": True, "settings": s, "manifest": str(manifest),
        "plan_coverage": {k: v for k, v in plan["coverage"].items() if k != "items_per_label"},
        "truth": {"items_right": round(prevalence, 4), "items_right_by_lang": true_acc,
                  "expected_alpha_correct": round(expected_alpha(s["flip"], prevalence), 4)},
        "totals": report["totals"],
        "by_lang": [{k: r[k] for k in ("lang", "judgments", "items", "correct", "judged", "accuracy", "low", "high",
                                       "appropriate", "appropriate_low", "appropriate_high")}
                    | {"alpha": alpha[r["lang"]]["alpha"], "alpha_low": alpha[r["lang"]]["low"],
                       "alpha_high": alpha[r["lang"]]["high"],
                       "spearman": (corr[r["lang"]].get("spearman") or {}).get("rho"),
                       "spearman_p": (corr[r["lang"]].get("spearman") or {}).get("p"),
                       "spearman_low": (corr[r["lang"]].get("spearman") or {}).get("low"),
                       "spearman_high": (corr[r["lang"]].get("spearman") or {}).get("high")}
                    for r in report["by_lang"]],
        "agreement_appropriate_all": next(r for r in report["agreement"]["appropriate"]["by_lang"] if r["lang"] == ALL),
        "failure_modes": len(report["failure_modes"]),
        "failure_modes_by_majority": sum(m["correct_but_inappropriate"] >= 2 for m in report["failure_modes"]),
    }
    return out, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=Path("datasets/demo/manifest.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/human_judgment_sim.json"))
    ap.add_argument("--svg", type=Path, default=Path("benchmarks/human_judgment_sim.svg"))
    args = ap.parse_args(argv)
    out, report = run(args.manifest.resolve())
    out["manifest"] = str(args.manifest)  # as typed: the JSON does not carry this machine's absolute paths
    from lugha.data.feedback_html import interval_svg
    from lugha.reports import write_report

    write_report(args.out, json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    write_report(args.svg, interval_svg(report["by_lang"], "lang", "SIMULATED study: judged correct per language "
                                        "(Wilson 95% interval)") + "\n")
    json.dump({k: out[k] for k in ("truth", "by_lang")}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
