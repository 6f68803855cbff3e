"""``lugha experiments forgetting``: adaptation vs retention. How much English does adapting to the target
languages cost, for each LoRA rank, learning rate and number of steps?

Protocol (retrieval, one ``metric``: ``t2i_r1`` per caption or ``i2t_r1`` per image, on the test split):

1. **source**: the English model, a ``projection`` adapter trained on the source language alone
   (``source_steps``). Its English score is the 100 % of retention; its target score is where
   adaptation starts.
2. **grid**: for each (rank, lr, steps), LoRA on the text tower (alpha = 2 x rank), started from the
   source's projections (``init_from``), trained on every target language's train rows.
3. **reference**: the same LoRA at the grid's largest rank and ``reference_lr``, trained on all the
   target data (``reference_epochs`` passes over it, capped by ``reference_max_steps`` where set, which
   the report says); its target score is the 100 % of "reached".

Thresholds (the survey's): English kept >= ``keep`` (95 %) of the source's, target >= ``reach`` (80 %) of
the reference's. Each is a point estimate and a paired non-inferiority cell of the export gate, on the
same items, Holm over every cell of the grid: English with :func:`lugha.training.paired_stats.make_cell`
(margin = (1 - keep) x source score; Tango's bound: one caption per image), the targets' pooled captions
with :func:`lugha.training.cluster_stats.clustered_cell` (margin = (1 - reach) x reference score; each
image's captions in the target languages are one cluster). ``pass`` = shown within the threshold,
``fail`` = shown below it, ``undecided`` = this test set cannot tell. The target's gain over the source
comes with its (cluster) interval too.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.config import DEFAULT_MODEL
from lugha.errors import ConfigError

from lugha.training.exp_common import (Budget, evaluate_cached, pooled_hits, pooled_images, retrieval_config,
                                       split_languages, train_or_reuse)

DEFAULT_GRID = {"rank": (4, 16), "lr": (2e-4, 1e-3), "steps": (100, 300)}
QUICK_GRID = {"rank": (2, 8), "lr": (2e-4, 1e-3), "steps": (20,)}


def parse_grid(text: str) -> dict[str, tuple]:
    """``rank=2,8;lr=1e-4,1e-3;steps=20,60`` -> ``{"rank": (2, 8), ...}``; keys not given keep the default."""
    out = dict(DEFAULT_GRID)
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULT_GRID:
            raise ConfigError("--grid", f"expected KEY=V1,V2;... with KEY in {list(DEFAULT_GRID)}, got {part!r}")
        cast = float if key == "lr" else int
        try:
            vals = tuple(cast(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise ConfigError("--grid", f"{key}: not {'numbers' if key == 'lr' else 'integers'}: {values!r}") from None
        if not vals or min(vals) <= 0:
            raise ConfigError("--grid", f"{key}: need positive values, got {values!r}")
        out[key] = vals
    return out


@dataclass(frozen=True)
class ForgettingExperiment:
    manifest: str
    work_dir: str
    model: str = DEFAULT_MODEL
    source: str = "en"
    targets: tuple[str, ...] = ()  # empty: every other language of the train split
    grid: dict = field(default_factory=lambda: dict(DEFAULT_GRID))
    metric: str = "t2i_r1"
    keep: float = 0.95
    reach: float = 0.80
    source_budget: Budget = field(default_factory=lambda: Budget(steps=300, lr=2e-3))
    batch_size: int = 64
    seed: int = 0
    threads: int = 0
    reference_lr: float = 1e-3
    reference_epochs: int = 1
    reference_max_steps: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not (0 < self.keep <= 1 and 0 < self.reach <= 1):
            raise ConfigError("--keep/--reach", f"must be fractions in (0, 1], got {self.keep}, {self.reach}")
        if self.metric not in ("t2i_r1", "i2t_r1"):
            raise ConfigError("--metric", f"expected t2i_r1 or i2t_r1, got {self.metric!r}")

    def settings(self) -> list[dict]:
        return [{"rank": r, "lr": lr, "steps": s} for r, lr, s in
                itertools.product(self.grid["rank"], self.grid["lr"], self.grid["steps"])]


def _lora(rank: int) -> dict:
    return {"adapter.kind": "lora", "adapter.r": rank, "adapter.alpha": 2 * rank}


def _reference_steps(exp: ForgettingExperiment, targets: list[str]) -> tuple[int, float]:
    """(steps, epochs seen) of the reference: ``reference_epochs`` passes over the target rows, capped."""
    from lugha.training.data import PairSet

    rows = len(PairSet(exp.manifest, "train", targets))
    per_epoch = max(rows // exp.batch_size, 1)
    steps = exp.reference_epochs * per_epoch
    if exp.reference_max_steps:
        steps = min(steps, exp.reference_max_steps)
    return steps, steps / per_epoch


def run_forgetting(exp: ForgettingExperiment, say: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """The whole experiment; returns the report (schema: docs/experiments.md)."""
    from tqdm.auto import tqdm

    targets = list(exp.targets) or [t for t in split_languages(exp.manifest, "train") if t != exp.source]
    if exp.source in targets or not targets:
        raise ConfigError("--targets", f"need target languages other than the source {exp.source!r}, got {targets}")
    work, langs = Path(exp.work_dir), [exp.source, *targets]
    src_b = dataclasses.replace(exp.source_budget, batch_size=exp.batch_size, seed=exp.seed, threads=exp.threads)
    say(f"source: projection adapter on {exp.source} ({src_b.steps} steps)")
    src_run = train_or_reuse(retrieval_config(exp.manifest, exp.model, (exp.source,), src_b,
                                              {"adapter.kind": "projection"}, exp.cache_dir), work / "source", say, False)
    ev = lambda run: evaluate_cached(run, exp.manifest, "test", langs, exp.cache_dir, exp.batch_size)  # noqa: E731
    reports = {"source": ev(src_run)}
    ref_steps, ref_epochs = _reference_steps(exp, targets)
    ref = {"rank": max(exp.grid["rank"]), "lr": exp.reference_lr, "steps": ref_steps}
    runs = [("reference", ref)] + [(f"r{s['rank']}-lr{s['lr']:g}-s{s['steps']}", s) for s in exp.settings()]
    for name, s in tqdm(runs, desc="LoRA runs", unit="run", disable=not show_progress):
        b = Budget(steps=s["steps"], batch_size=exp.batch_size, lr=s["lr"], seed=exp.seed, threads=exp.threads)
        cfg = retrieval_config(exp.manifest, exp.model, targets, b, _lora(s["rank"]), exp.cache_dir, str(src_run))
        reports[name] = ev(train_or_reuse(cfg, work / name, say, False))
    rows = _rows(exp, runs, reports, targets)
    report = {"experiment": "forgetting", "protocol": _protocol(exp, targets, src_b, ref, ref_epochs),
              "source_scores": _scores(reports["source"], exp, targets),
              "reference": {**ref, **_scores(reports["reference"], exp, targets), "epochs_seen": ref_epochs},
              "settings": rows}
    report["summary"] = {"meet_both_point": [r["name"] for r in rows if r["meets_both_point"]],
                         "meet_both_shown": [r["name"] for r in rows if r["meets_both_shown"]], "settings": len(rows)}
    return report


def _scores(rep: dict, exp, targets) -> dict:
    m = exp.metric
    return {"english": rep["languages"][exp.source][m],
            "targets_mean": float(np.mean([rep["languages"][t][m] for t in targets])),
            "targets_pooled": float(np.mean(pooled_hits(rep, m, targets)[0]["pooled"][m])),
            "per_language": {t: rep["languages"][t][m] for t in [exp.source, *targets]}}


def _rows(exp, runs, reports, targets) -> list[dict]:
    """Each grid setting: scores, ratios, the two gate cells (Holm over all of them) and the gain. English is
    one caption per image (per-item Tango cells); the targets' pooled captions come in clusters, one per
    image (its caption in every target language): cluster t cells and gains."""
    from lugha.training.cluster_stats import clustered_cell, compare_clustered, holm_verdicts
    from lugha.training.paired_stats import decide, make_cell

    m, src, ref = exp.metric, reports["source"], reports["reference"]
    src_en = np.asarray(src["items"][exp.source][m])
    images = pooled_images(ref, m, targets)
    if pooled_images(src, m, targets) != images:
        raise ConfigError("--targets", "the source's target items are not the reference's")
    ref_t, src_t = (pooled_hits(r, m, targets)[0]["pooled"][m] for r in (ref, src))
    src_ref_en, ref_score = float(src_en.mean()), float(np.mean(ref_t))
    rows, cells, gains = [], [], []
    for name, s in runs[1:]:
        rep = reports[name]
        if pooled_images(rep, m, targets) != images:
            raise ConfigError("--targets", f"{name}: its target items are not the reference's")
        en = np.asarray(rep["items"][exp.source][m])
        tgt = pooled_hits(rep, m, targets)[0]["pooled"][m]
        cells += [make_cell(name, exp.source, f"{m} kept", src_en, en, 100 * (1 - exp.keep) * src_ref_en),
                  clustered_cell(name, "targets", f"{m} reached", ref_t, tgt, images, 100 * (1 - exp.reach) * ref_score)]
        gains.append(compare_clustered(tgt, src_t, images))
        rows.append({"name": name, **s, "english": float(en.mean()), "targets_pooled": float(np.mean(tgt)),
                     "targets_mean": float(np.mean([rep["languages"][t][m] for t in targets])),
                     "retention_pct": 100 * float(en.mean()) / src_ref_en if src_ref_en else None,
                     "reached_pct": 100 * float(np.mean(tgt)) / ref_score if ref_score else None})
    decided = decide(cells)
    holm_verdicts(gains)
    for i, r in enumerate(rows):
        keep_cell, reach_cell = decided[2 * i], decided[2 * i + 1]
        r["kept_cell"], r["reached_cell"] = dataclasses.asdict(keep_cell), dataclasses.asdict(reach_cell)
        r["gain"] = {k: gains[i][k] for k in ("diff_points", "ci_low_points", "ci_high_points", "p_holm", "verdict")}
        r["meets_keep_point"] = r["retention_pct"] is not None and r["retention_pct"] >= 100 * exp.keep
        r["meets_reach_point"] = r["reached_pct"] is not None and r["reached_pct"] >= 100 * exp.reach
        r["meets_both_point"] = r["meets_keep_point"] and r["meets_reach_point"]
        r["meets_both_shown"] = keep_cell.decision == "pass" and reach_cell.decision == "pass"
    return rows


def _protocol(exp, targets, src_b, ref, ref_epochs) -> dict:
    return {"manifest": str(exp.manifest), "model": exp.model, "source": exp.source, "targets": targets,
            "metric": exp.metric, "grid": {k: list(v) for k, v in exp.grid.items()}, "keep": exp.keep, "reach": exp.reach,
            "source_adapter": f"projection, {src_b.steps} steps, lr {src_b.lr}",
            "grid_adapter": "LoRA on the text tower (alpha = 2 x rank), init_from the source run, trained on the targets",
            "reference": f"LoRA r={ref['rank']}, lr {ref['lr']}, {ref['steps']} steps = {ref_epochs:.2f} epochs of "
                         "the target train rows", "batch_size": exp.batch_size, "seed": exp.seed,
            "test_split": "test", "work_dir": str(exp.work_dir),
            "statistics": "paired non-inferiority cells, Holm over all cells: English kept (one caption per image: "
                          "Tango bound, margin = (1 - keep) x source) and targets reached (pooled captions, images as "
                          "clusters: cluster t bound, Tango's per-item bound its floor, margin = (1 - reach) x "
                          "reference); gain over the source on the targets: cluster t 95% interval and test, Holm"}


def render_html(report: dict) -> str:
    from lugha.training.exp_plots import forest_svg, page, scatter_svg, table_html

    p, rows = report["protocol"], report["settings"]
    points = [{"x": r["reached_pct"] or 0.0, "y": r["retention_pct"] or 0.0, "label": r["name"],
               "ok": r["meets_both_point"]} for r in rows]
    forest = [{"label": r["name"], "diff": r["gain"]["diff_points"], "lo": r["gain"]["ci_low_points"],
               "hi": r["gain"]["ci_high_points"], "verdict": r["gain"]["verdict"]} for r in rows]
    table = [{"setting": r["name"], "English": r["english"], "kept %": r["retention_pct"],
              "kept (gate)": r["kept_cell"]["decision"], "targets": r["targets_pooled"], "reached %": r["reached_pct"],
              "reached (gate)": r["reached_cell"]["decision"], "gain (points)": r["gain"]["diff_points"],
              "both (point)": r["meets_both_point"], "both (shown)": r["meets_both_shown"]} for r in rows]
    s, ref = report["source_scores"], report["reference"]
    intro = (f"{p['manifest']}: source {p['source']} ({p['source_adapter']}); English {s['english']:.3f}, targets "
             f"{s['targets_pooled']:.3f} before adaptation. Reference: {p['reference']}: targets "
             f"{ref['targets_pooled']:.3f}. Thresholds: keep >= {100 * p['keep']:.0f} % of English, reach >= "
             f"{100 * p['reach']:.0f} % of the reference. {p['statistics']}. Meet both (point estimate): "
             f"{', '.join(report['summary']['meet_both_point']) or 'none'}; shown by the paired cells: "
             f"{', '.join(report['summary']['meet_both_shown']) or 'none'}.")
    return page("Forgetting: adaptation vs retention", intro, [
        ("English retention vs target reached (filled: meets both; shaded: the survey's region)",
         scatter_svg("retention vs reached", points, 100 * p["reach"], 100 * p["keep"],
                     f"target {p['metric']}, % of the reference", f"English {p['metric']}, % of the source")),
        ("Target gain over the source (points, 95% interval)", forest_svg("setting - source, target languages", forest)),
        ("Settings", table_html(table))])


__all__ = ["ForgettingExperiment", "run_forgetting", "render_html", "parse_grid", "DEFAULT_GRID", "QUICK_GRID"]
