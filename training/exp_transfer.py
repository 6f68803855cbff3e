"""``lugha experiments transfer``: which source language helps a target? The survey's open question
(arXiv 2502.05568): does a close source beat English?

Protocol: one retrieval adapter per source language (``projection`` by default: towers frozen, so every
run reads the same cached features; ``lora`` trains the text tower too), each trained on that language's
train rows alone under one budget, then evaluated on every target's test rows: a source x target matrix
of R@1 (``metric``: ``t2i_r1`` per caption, or ``i2t_r1`` per image). Per target:

* the best source other than the target itself, chosen on the validation split (choosing it on the
  test split would flatter it: the winner's curse), against English as the source, on the test split:
  the difference with Tango's interval and the exact McNemar test on the same items, Holm over targets;
* the in-language source (the diagonal), the reference transfer is measured against, against English.

Each language carries its ISO 15924 script and Glottolog family (:mod:`lugha.training.exp_langinfo`),
and each best source says how close it is to its target (same branch / family / script / unrelated).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.config import DEFAULT_MODEL
from lugha.errors import ConfigError

from lugha.training.exp_common import (Budget, compare, evaluate_cached, hits_of, retrieval_config, split_languages,
                                       train_or_reuse)

ADAPTERS = ("projection", "lora")
METRICS = ("t2i_r1", "i2t_r1")


@dataclass(frozen=True)
class TransferExperiment:
    manifest: str
    work_dir: str
    model: str = DEFAULT_MODEL
    sources: tuple[str, ...] = ()  # empty: every language of the train split
    targets: tuple[str, ...] = ()  # empty: every language of the test split
    english: str = "en"
    adapter: str = "projection"
    metric: str = "t2i_r1"
    select_split: str = "val"
    budget: Budget = field(default_factory=lambda: Budget(steps=300, lr=2e-3))
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise ConfigError("--adapter", f"expected one of {list(ADAPTERS)}, got {self.adapter!r}")
        if self.metric not in METRICS:
            raise ConfigError("--metric", f"expected one of {list(METRICS)}, got {self.metric!r}")


def _select(exp: TransferExperiment, sources: list[str], targets: list[str], runs: dict, say) -> tuple[dict, str]:
    """Per target, the best source other than itself by the selection split's metric (the test split
    when the manifest has no selection split, which the report says)."""
    try:
        split_languages(exp.manifest, exp.select_split)
        split = exp.select_split
    except Exception:  # noqa: BLE001 - no such split: fall back, and say so
        split = "test"
        say(f"no {exp.select_split!r} split: the best source is chosen on the test split (optimistic)")
    scores = {}
    for s in sources:
        rep = evaluate_cached(runs[s], exp.manifest, split, targets, exp.cache_dir, exp.budget.batch_size)
        scores[s] = {t: rep["languages"][t][exp.metric] for t in targets if t in rep["languages"]}
    best = {}
    for t in targets:
        cands = [(scores[s].get(t, -1.0), s) for s in sources if s != t]
        best[t] = max(cands, key=lambda c: (c[0], c[1] == exp.english))[1] if cands else None
    return {"split": split, "scores": scores, "best": best}, split


def run_transfer(exp: TransferExperiment, say: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """The whole experiment; returns the report (schema: docs/experiments.md)."""
    from tqdm.auto import tqdm

    from lugha.training.exp_langinfo import SOURCE, closeness, lang_info

    sources = list(exp.sources) or split_languages(exp.manifest, "train")
    targets = list(exp.targets) or split_languages(exp.manifest, "test")
    work = Path(exp.work_dir)
    overrides = {"adapter.kind": exp.adapter}
    runs, test = {}, {}
    for s in tqdm(sources, desc="sources", unit="run", disable=not show_progress):
        cfg = retrieval_config(exp.manifest, exp.model, (s,), exp.budget, overrides, exp.cache_dir)
        runs[s] = train_or_reuse(cfg, work / f"source-{s}", say, show_progress=False)
        test[s] = evaluate_cached(runs[s], exp.manifest, "test", targets, exp.cache_dir, exp.budget.batch_size)
    targets = [t for t in targets if t in test[sources[0]]["languages"]]
    matrix = [[test[s]["languages"][t][exp.metric] for t in targets] for s in sources]
    selection, split = _select(exp, sources, targets, runs, say)
    rows = _comparisons(exp, sources, targets, test, selection["best"])
    langs = sorted(set(sources) | set(targets))
    report = {"experiment": "transfer", "protocol": _protocol(exp, sources, targets, split),
              "languages": {lang: lang_info(lang) for lang in langs}, "language_source": SOURCE,
              "sources": sources, "targets": targets, "metric": exp.metric, "matrix": matrix,
              "selection": selection, "targets_detail": rows}
    for r in rows:
        r["closeness"] = closeness(r["best_source"], r["target"]) if r["best_source"] else None
    report["summary"] = _summary(rows, exp.english)
    return report


def _comparisons(exp, sources, targets, test, best) -> list[dict]:
    """Per target: best source vs English, in-language vs English (two Holm families over targets)."""
    en, metric = exp.english, exp.metric
    have_en = en in sources
    out = []
    for t in targets:
        row = {"target": t, "best_source": best[t], "in_language": test[t]["languages"][t][metric] if t in test else None,
               "best": test[best[t]]["languages"][t][metric] if best[t] else None,
               "english": test[en]["languages"][t][metric] if have_en else None}
        out.append(row)
    if not have_en:
        return out
    families = {"best_vs_english": [r for r in out if r["best_source"] not in (None, en) and r["target"] != en],
                "in_language_vs_english": [r for r in out if r["target"] in test and r["target"] != en]}
    for name, members in families.items():
        if not members:
            continue
        pick = (lambda r: r["best_source"]) if name == "best_vs_english" else (lambda r: r["target"])
        run = ({r["target"]: hits_of(test[pick(r)], metric, [r["target"]])[0][r["target"]] for r in members},
               {r["target"]: hits_of(test[pick(r)], metric, [r["target"]])[1][r["target"]] for r in members})
        base = hits_of(test[en], metric, [r["target"] for r in members])
        by_target = {c["lang"]: c for c in compare(run, base)}
        for r in members:
            c = by_target[r["target"]]
            r[name] = {k: c[k] for k in ("n", "diff_points", "ci_low_points", "ci_high_points", "p_value", "p_holm",
                                         "verdict", "run_only", "baseline_only")}
    for r in out:
        if r["target"] == en:  # English as the source is this target's in-language run
            r["best_vs_english"] = {"verdict": "the target is English", "diff_points": None}
        elif r["best_source"] == en:
            r["best_vs_english"] = {"verdict": "English is the best source", "diff_points": 0.0}
    return out


def _protocol(exp, sources, targets, split) -> dict:
    b = exp.budget
    return {"manifest": str(exp.manifest), "model": exp.model, "adapter": exp.adapter, "metric": exp.metric,
            "english": exp.english, "sources": sources, "targets": targets, "steps": b.steps, "batch_size": b.batch_size,
            "lr": b.lr, "seed": b.seed, "train_split": "train", "test_split": "test", "selection_split": split,
            "work_dir": str(exp.work_dir),
            "statistics": "paired per test item of the target: Tango 95% interval of (source - English), exact "
                          "McNemar, Holm over the targets of each family"}


def _summary(rows: list[dict], en: str) -> dict:
    tested = [r for r in rows if isinstance(r.get("best_vs_english"), dict) and "p_holm" in r["best_vs_english"]]
    verdicts = [r["best_vs_english"]["verdict"] for r in tested]
    close = [r for r in tested if r["closeness"] in ("same branch", "same family", "same script")]
    return {"targets": len(rows), "english_best": sum(r["best_source"] == en for r in rows),
            "best_beats_english": verdicts.count("better"), "best_worse_than_english": verdicts.count("worse"),
            "no_difference_shown": verdicts.count("no difference shown"),
            "close_source_beats_english": sum(r["best_vs_english"]["verdict"] == "better" for r in close),
            "close_best_sources": len(close)}


def render_html(report: dict) -> str:
    from lugha.training.exp_plots import forest_svg, heatmap_svg, page, table_html

    p, src, tgt = report["protocol"], report["sources"], report["targets"]
    best = {r["target"]: r["best_source"] for r in report["targets_detail"]}
    marked = {(src.index(best[t]), j) for j, t in enumerate(tgt) if best[t] in src}
    info = report["languages"]
    forest = [{"label": f"{r['target']} ← {r['best_source']}", "diff": c["diff_points"], "lo": c["ci_low_points"],
               "hi": c["ci_high_points"], "verdict": c["verdict"]}
              for r in report["targets_detail"] if "p_holm" in (c := r.get("best_vs_english") or {})]
    table = [{"target": r["target"], "script": info[r["target"]]["script"], "family": info[r["target"]]["family"],
              "in-language": r["in_language"], "English": r["english"], "best source": r["best_source"],
              "its script/family": (f"{info[r['best_source']]['script']} / {info[r['best_source']]['family']}"
                                    if r["best_source"] else ""), "closeness": r.get("closeness"),
              "best": r["best"], "best - en (points)": (r.get("best_vs_english") or {}).get("diff_points"),
              "verdict (Holm)": (r.get("best_vs_english") or {}).get("verdict")} for r in report["targets_detail"]]
    langs = [{"lang": k, **{x: v[x] for x in ("script", "family", "branch")}} for k, v in info.items()]
    intro = (f"{p['manifest']}: {p['adapter']} adapter per source language ({p['steps']} steps, lr {p['lr']}, seed "
             f"{p['seed']}), model {p['model']}, {p['metric']} on each target's test rows. Best source per target "
             f"chosen on the {p['selection_split']} split. {p['statistics']}.")
    return page("Transfer: which source language helps a target?", intro, [
        (f"{p['metric']}, source x target (framed: the best source per target)",
         heatmap_svg(f"{p['metric']} (percent)", src, tgt, report["matrix"], marked)),
        ("Best source vs English (points, 95% interval)", forest_svg("best source - English", forest)),
        ("Per target", table_html(table)),
        (f"Scripts and families ({report['language_source']})", table_html(langs))])


__all__ = ["TransferExperiment", "run_transfer", "render_html", "ADAPTERS", "METRICS"]
