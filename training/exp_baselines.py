"""``lugha experiments baselines``: does the image help? The survey's first two experiments (arXiv
2502.05568): a text-only baseline and frozen towers + a trained fusion layer, on a learning curve.

Protocol, on frozen towers and cached features (the fusion heads' machinery, :mod:`lugha.training.classify`):

1. Every row of the train split (``languages``) with a ``label_field`` goes through the frozen towers
   and the model's projections once (``init_from``: a retrieval run whose projections/LoRA to use).
2. One seeded order of those rows; the first ``n`` rows for each ``n`` in ``sizes`` (nested subsets, so
   the curve is one sample growing, not independent draws).
3. At each ``n``, two arms train the same head (``early`` fusion MLP: same size, seed, steps, lr):
   ``text`` sees the image as missing (all zeros, the fusion heads' convention), i.e. the frozen text
   tower and a small head; ``fusion`` sees both towers. Only the image differs.
4. Test split, every language: accuracy per language per arm, and the image's gain (fusion - text) per
   language with Tango's interval and the exact McNemar test on the same test rows, Holm-corrected over
   every (language, n) cell; the pooled gain per n as its own family, with each image a cluster of its
   captions (:mod:`lugha.training.cluster_stats`: an image is captioned in every language, so its rows are
   not independent items).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lugha.config import DEFAULT_MODEL
from lugha.errors import ConfigError

from lugha.training.exp_common import Budget, compare, merge

ARMS = ("text", "fusion")


@dataclass(frozen=True)
class BaselinesExperiment:
    manifest: str
    model: str = DEFAULT_MODEL
    languages: tuple[str, ...] = ()  # empty: every language
    sizes: tuple[int, ...] = (500, 1000, 2000)
    label_field: str = "label"
    head: str = "early"
    budget: Budget = field(default_factory=lambda: Budget(steps=600, lr=3e-3))
    init_from: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 2:
            raise ConfigError("--sizes", f"need training sizes >= 2, got {list(self.sizes)}")
        if self.head not in ("early", "late", "prototype"):
            raise ConfigError("--head", f"expected early, late or prototype (pooled-embedding heads), got {self.head!r}")


def _features(exp: BaselinesExperiment, show_progress: bool):
    """(train HeadData of the first max(sizes) rows of the seeded order, test HeadData, classes, test row ids):
    frozen towers, projected once. Only the rows the largest arm trains on go through the text tower (the
    rest of the split would be cached for nothing); the image features are the whole split's cache."""
    from lugha.training.classify import freeze, labelled_pairs, load_features_for, load_frozen_model, split_classes
    from lugha.training.feature_cache import frozen_weights_digest
    from lugha.training.fusion import project_features
    from lugha.training.train_config import ClassifyConfig, DataConfig, RuntimeConfig, TrainConfig, resolve_paths

    cfg = resolve_paths(TrainConfig(
        model=exp.model, task="classify", model_overrides={} if exp.init_from else {"adapter.kind": "projection"},
        classify=ClassifyConfig(head=exp.head, label_field=exp.label_field, init_from=exp.init_from),
        data=DataConfig(manifest=exp.manifest, languages=exp.languages, batch_size=exp.budget.batch_size,
                        cache_dir=exp.cache_dir), runtime=RuntimeConfig(seed=exp.budget.seed, precision="fp32")))
    model, tok, model_cfg = load_frozen_model(cfg)
    digest = frozen_weights_digest(model)
    fixed = dict(digest=digest, batch_size=exp.budget.batch_size, device="cpu", autocast=contextlib.nullcontext,
                 show_progress=show_progress)
    pairs = labelled_pairs(cfg.data.manifest, "train", exp.languages, exp.label_field)
    order = np.random.default_rng(exp.budget.seed).permutation(len(pairs))[:max(exp.sizes)]
    train_feats = _cached(model, model_cfg, tok, _take(pairs, order), cfg.data.cache_dir, **fixed)
    test_pairs, test_feats = load_features_for(model, model_cfg, tok, cfg.data.manifest, "test", exp.languages,
                                               exp.label_field, kind=exp.head, grid=3, max_tokens=24,
                                               precision="fp32", cache_dir=cfg.data.cache_dir, **fixed)
    freeze(model)
    classes = split_classes(pairs.labels, f"{exp.manifest} split 'train'")
    train = project_features(model, train_feats, _take(pairs, order), classes)
    test = project_features(model, test_feats, test_pairs, classes)
    ids = [getattr(r, "id", "") or f"{r.lang}:{r.group_key}:{r.text}" for r in test_pairs.records]
    return train, test, classes, ids, len(pairs)


def _take(pairs, rows: np.ndarray):
    """The labelled pairs ``rows`` (in that order); the image list stays the split's, so its cache key does."""
    import copy

    out = copy.copy(pairs)
    out.records, out.image_index, out.langs = [pairs.records[i] for i in rows], pairs.image_index[rows], pairs.langs[rows]
    out.groups, out.texts = [pairs.groups[i] for i in rows], [pairs.texts[i] for i in rows]
    out.labels = [pairs.labels[i] for i in rows]
    return out


def _cached(model, model_cfg, tok, pairs, cache_dir, *, digest, batch_size, device, autocast, show_progress):
    from lugha.training.data import ImageStore
    from lugha.training.feature_cache import FeatureCache
    from lugha.training.fusion import cache_features

    store = ImageStore(pairs.image_paths, model_cfg.preprocess, cache_dir)
    store.build(0, show_progress)
    fc = FeatureCache(digest, model_cfg.to_dict(), "fp32", cache_dir)
    return cache_features(model, tok, pairs, store, fc, batch_size=batch_size, device=device, autocast=autocast,
                          desc="train", show_progress=show_progress)


def _subset(data, rows: np.ndarray, text_only: bool):
    from lugha.training.fusion import HeadData

    return HeadData(labels=data.labels[rows], langs=data.langs[rows], groups=[data.groups[i] for i in rows],
                    image_index=data.image_index[rows], text=data.text[rows],
                    image=np.zeros_like(data.image) if text_only else data.image)


def train_arm(exp: BaselinesExperiment, data, num_classes: int):
    """One head trained on ``data`` under the experiment's budget (the fusion experiment's step loop)."""
    import torch

    from lugha.training.classify import head_kwargs, head_steps
    from lugha.training.fusion import build_head
    from lugha.training.optim import make_optimizer, make_scheduler
    from lugha.training.train_config import ClassifyConfig, OptimConfig

    b = exp.budget
    head = build_head(exp.head, num_classes, data.text.shape[1], seed=b.seed, **head_kwargs(ClassifyConfig()))
    oc = OptimConfig(lr=b.lr, weight_decay=0.01, warmup_steps=min(20, b.steps // 10))
    head.prepare(data)
    opt = make_optimizer(head, oc, torch.device("cpu"))
    torch.manual_seed(b.seed)
    losses = list(head_steps(head, data, opt, make_scheduler(opt, oc, b.steps), min(b.batch_size, len(data)), b.seed,
                             b.steps))
    return head, losses


def run_baselines(exp: BaselinesExperiment, say: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """The whole experiment; returns the report (schema: docs/experiments.md)."""
    from tqdm.auto import tqdm

    from lugha.training.classify import predict
    from lugha.training.optim import torch_threads

    with torch_threads(exp.budget.threads):
        train, test, classes, ids, n_labelled = _features(exp, show_progress)
        order = np.arange(len(train))  # already the seeded order
        sizes = sorted({min(n, len(order)) for n in exp.sizes})
        langs = sorted(set(test.langs.tolist()))
        say(f"{len(classes)} classes; {n_labelled} labelled training rows; sizes {sizes}; test {len(test)} rows, "
            f"{len(langs)} languages")
        arms, hits = [], {}
        with tqdm(total=2 * len(sizes), desc="heads", unit="head", disable=not show_progress) as bar:
            for n in sizes:
                for arm in ARMS:
                    data = _subset(train, order[:n], text_only=arm == "text")
                    head, losses = train_arm(exp, data, len(classes))
                    got = predict(head, test, "image" if arm == "text" else None).argmax(1) == test.labels
                    hits[arm, n] = got
                    per_lang = {lang: float(got[test.langs == lang].mean()) for lang in langs}
                    arms.append({"arm": arm, "pairs": n, "acc": float(np.mean(list(per_lang.values()))),
                                 "acc_pooled": float(got.mean()), "per_language": per_lang,
                                 "train_rows_per_language": _counts(data.langs), "loss_first": losses[0],
                                 "loss_last": float(np.mean(losses[-10:]))})
                    bar.update(1)
    majority = int(np.bincount(train.labels[order[:sizes[-1]]]).argmax())
    chance = {lang: float((test.labels[test.langs == lang] == majority).mean()) for lang in langs}
    gains, pooled = _gains(hits, test.langs, ids, test.image_index, sizes, langs)
    report = {"experiment": "baselines", "protocol": _protocol(exp, classes, n_labelled, sizes, test, langs),
              "languages": langs, "arms": arms, "majority_acc": chance, "gains": gains, "pooled_gains": pooled}
    report["summary"] = _summary(report)
    return report


def _counts(langs: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(langs, return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts)}


def _gains(hits: dict, test_langs: np.ndarray, ids: list[str], images: np.ndarray, sizes: list[int],
           langs: list[str]):
    """fusion vs text per (language, n): one caption per image, McNemar/Tango, one Holm family; and pooled
    over languages per n, where each image is a cluster of its captions (cluster t, another family)."""
    from lugha.training.cluster_stats import compare_clustered, holm_verdicts

    def part(arm: str, n: int):
        key = f"acc@{n}"
        where = {lang: np.flatnonzero(test_langs == lang) for lang in langs}
        return ({lang: {key: hits[arm, n][w]} for lang, w in where.items()},
                {lang: {key: [ids[i] for i in w]} for lang, w in where.items()})

    rows = compare(merge(*(part("fusion", n) for n in sizes)), merge(*(part("text", n) for n in sizes)))
    for r in rows:
        r["pairs"] = int(r.pop("metric").split("@")[1])
    pooled = holm_verdicts([{"lang": "all", "pairs": n, **compare_clustered(hits["fusion", n], hits["text", n], images)}
                            for n in sizes])
    for r in rows + pooled:
        r["fusion"], r["text"] = r.pop("run"), r.pop("baseline")
        r["fusion_only"], r["text_only"] = r.pop("run_only"), r.pop("baseline_only")
    return sorted(rows, key=lambda r: (r["pairs"], r["lang"])), pooled


def _protocol(exp, classes, n_rows, sizes, test, langs) -> dict:
    b = exp.budget
    return {"manifest": str(exp.manifest), "model": exp.model, "init_from": exp.init_from, "label_field": exp.label_field,
            "classes": classes, "head": exp.head, "train_split": "train", "test_split": "test",
            "labelled_train_rows": n_rows, "sizes_requested": list(exp.sizes), "sizes": sizes, "steps": b.steps,
            "batch_size": b.batch_size, "lr": b.lr, "seed": b.seed, "test_rows": int(len(test)),
            "test_images": int(len(set(test.image_index.tolist()))), "languages": langs,
            "arms": {"text": "frozen text tower + projection, head sees the image as missing (zeros)",
                     "fusion": "frozen text and image towers + projections, the same head on both"},
            "statistics": "per language (one caption per image): Tango 95% interval of fusion - text, exact "
                          "McNemar, Holm over (language, pairs); pooled over languages: images as clusters of their "
                          "captions (cluster t interval and test), their own Holm family"}


def _summary(report: dict) -> dict:
    out = {}
    for n in report["protocol"]["sizes"]:
        rows = [g for g in report["gains"] if g["pairs"] == n]
        pooled = next(g for g in report["pooled_gains"] if g["pairs"] == n)
        out[str(n)] = {"better": sum(r["verdict"] == "better" for r in rows),
                       "worse": sum(r["verdict"] == "worse" for r in rows),
                       "no_difference_shown": sum(r["verdict"] == "no difference shown" for r in rows),
                       "pooled_gain_points": pooled["diff_points"],
                       "pooled_ci_points": [pooled["ci_low_points"], pooled["ci_high_points"]],
                       "pooled_verdict": pooled["verdict"]}
    return out


def render_html(report: dict) -> str:
    from lugha.training.exp_plots import bars_svg, forest_svg, lines_svg, page, table_html

    p, langs, sizes = report["protocol"], report["languages"], report["protocol"]["sizes"]
    acc = {(a["arm"], a["pairs"]): a for a in report["arms"]}
    series = {f"{arm} @{n}": [acc[arm, n]["per_language"][lang] for lang in langs] for n in sizes for arm in ARMS}
    series["majority"] = [report["majority_acc"][lang] for lang in langs]
    curve = {arm: [acc[arm, n]["acc"] for n in sizes] for arm in ARMS}
    biggest = sizes[-1]
    forest = [{"label": f"{g['lang']} @{g['pairs']}", "diff": g["diff_points"], "lo": g["ci_low_points"],
               "hi": g["ci_high_points"], "verdict": g["verdict"]}
              for g in report["pooled_gains"] + [g for g in report["gains"] if g["pairs"] == biggest]]
    table = [{"lang": lang, **{k: acc[arm, n]["per_language"][lang] for n in sizes for arm in ARMS
                               for k in [f"{arm}@{n}"]}, "majority": report["majority_acc"][lang]} for lang in langs]
    gains = [{k: g[k] for k in ("lang", "pairs", "n", "text", "fusion", "diff_points", "ci_low_points", "ci_high_points",
                                "p_holm", "verdict")} for g in report["gains"]]
    intro = (f"{p['manifest']}: {p['label_field']} ({len(p['classes'])} classes) from text alone vs text + image, "
             f"model {p['model']}, frozen towers, {p['head']} head, {p['steps']} steps at lr {p['lr']}, seed {p['seed']}; "
             f"test {p['test_rows']} rows ({p['test_images']} images). {p['statistics']}.")
    return page("Baselines: does the image help?", intro, [
        ("Accuracy per language per arm", bars_svg("accuracy per language", langs, series)),
        ("Learning curve (mean over languages)", lines_svg("mean accuracy vs training pairs", sizes, curve,
                                                           "training pairs", "accuracy")),
        (f"Gain of adding the image (points, 95% interval; pooled at each size, per language at {biggest})",
         forest_svg("fusion - text", forest)),
        ("Accuracy table", table_html(table)), ("Paired comparisons (all)", table_html(gains))])


__all__ = ["BaselinesExperiment", "run_baselines", "render_html", "train_arm", "ARMS"]
