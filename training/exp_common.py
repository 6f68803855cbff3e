"""What the research-question experiments share: retrieval runs of the trainer under one budget, their
evaluation from the frozen-feature cache, and the paired comparisons of :mod:`lugha.training.paired_stats`.

A run of the ``projection`` adapter changes nothing below the projections, so its test split's tower
features are the ones every other run of the same model has: they are computed once (the trainer's own
feature cache, same key) and each run's evaluation only projects them. A LoRA run changes the text tower
and is evaluated with it live.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lugha.errors import ConfigError

PRECISION = "fp32"  # the experiments run on CPU; the trainer's cache key uses the precision it trains in


@dataclass(frozen=True)
class Budget:
    """One run's training budget: optimizer steps, batch, learning rate, seed, CPU threads."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError("--lr", f"must be positive, got {self.lr}")


def retrieval_config(manifest: str, model: str, languages: Sequence[str], budget: Budget, overrides: dict,
                     cache_dir: str | None = None, init_from: str | None = None):
    """A retrieval (contrastive) run on ``languages`` of the train split, exactly ``budget.steps`` steps,
    no validation (the experiments choose nothing on the test split), checkpoint ``last``."""
    from lugha.training.train_config import DataConfig, LoopConfig, OptimConfig, RuntimeConfig, TrainConfig, resolve_paths

    return resolve_paths(TrainConfig(
        model=model, model_overrides=dict(overrides), init_from=init_from,
        data=DataConfig(manifest=manifest, languages=tuple(languages), val_split="", batch_size=budget.batch_size,
                        cache_dir=cache_dir),
        optim=OptimConfig(lr=budget.lr, warmup_steps=min(20, budget.steps // 10)),
        loop=LoopConfig(epochs=1_000_000, max_steps=budget.steps, log_every=50),
        runtime=RuntimeConfig(seed=budget.seed, threads=budget.threads, precision=PRECISION)))


def train_or_reuse(cfg, run_dir: Path, say: Callable[[str], None], show_progress: bool) -> Path:
    """Train ``cfg`` into ``run_dir``, or reuse it when it already holds this finished config (a rerun
    of an experiment with the same ``--work`` only evaluates); another config there is an error."""
    from lugha.training import checkpoint as ckpt
    from lugha.training.train_config import diff_configs, load_train_config
    from lugha.training.trainer import train

    if (run_dir / ckpt.TRAIN_CONFIG).is_file():
        changed = diff_configs(load_train_config(run_dir / ckpt.TRAIN_CONFIG), cfg)
        if not changed and (run_dir / "last" / ckpt.META).is_file():
            say(f"reusing {run_dir}")
            return run_dir
        raise ConfigError("--work", f"{run_dir} holds another (or an unfinished) run"
                                    f"{' (changed: ' + ', '.join(changed) + ')' if changed else ''}; pass another --work")
    train(cfg, run_dir, show_progress=show_progress, say=lambda m: None)
    return run_dir


def evaluate_cached(run_dir: Path, manifest: str, split: str, languages: Sequence[str] = (),
                    cache_dir: str | None = None, batch_size: int = 64, show_progress: bool = False) -> dict:
    """:func:`~lugha.training.evaluate.evaluate_embeddings` of ``RUN/last`` on ``split`` with the per-item
    hits (``items``/``item_ids``); frozen towers' features come from the feature cache."""
    import torch

    from lugha.training.checkpoint import load_run_model
    from lugha.training.data import ImageStore, PairSet
    from lugha.training.evaluate import embed_pairs, evaluate_embeddings
    from lugha.training.feature_cache import (FeatureCache, compute_image_features, compute_text_features,
                                              frozen_weights_digest, image_inputs_key, text_inputs_key)
    from lugha.training.optim import torch_threads

    model, tok, model_cfg, train_cfg, _ = load_run_model(run_dir, "last")
    dev, autocast = torch.device("cpu"), contextlib.nullcontext
    with torch_threads(train_cfg.runtime.threads):
        pairs = PairSet(manifest, split, languages)
        store = ImageStore(pairs.image_paths, model_cfg.preprocess, cache_dir)
        store.build(0, show_progress)
        fc = FeatureCache(frozen_weights_digest(model), model_cfg.to_dict(), PRECISION, cache_dir)
        img_f = txt_f = None
        if model.image_tower_frozen:
            img_f = fc.get_or_build("image", image_inputs_key(store), len(pairs.image_paths), lambda: (
                compute_image_features(model, store, batch_size, dev, autocast)), f"image features ({split})", show_progress)
        if model.text_tower_frozen:
            txt_f = fc.get_or_build("text", text_inputs_key(pairs.texts), len(pairs), lambda: (
                compute_text_features(model, tok, pairs.texts, batch_size, dev, autocast)), f"text features ({split})",
                show_progress)
        img, txt = embed_pairs(model, pairs, store, tok, batch_size, dev, autocast, img_f, txt_f)
    return evaluate_embeddings(pairs, img, txt, items=True)


def hits_of(report: dict, metric: str, langs: Sequence[str]) -> tuple[dict, dict]:
    """(``{lang: {metric: hits}}``, ``{lang: {metric: ids}}``) of ``report`` for :func:`compare_runs`."""
    return ({lang: {metric: np.asarray(report["items"][lang][metric])} for lang in langs},
            {lang: {metric: report["item_ids"][lang][metric]} for lang in langs})


def pooled_hits(report: dict, metric: str, langs: Sequence[str], name: str = "pooled") -> tuple[dict, dict]:
    """The items of every language in ``langs`` as one pseudo-language ``name`` (ids prefixed by language)."""
    hits = np.concatenate([np.asarray(report["items"][lang][metric]) for lang in langs])
    ids = [f"{lang}:{i}" for lang in langs for i in report["item_ids"][lang][metric]]
    return {name: {metric: hits}}, {name: {metric: ids}}


def pooled_images(report: dict, metric: str, langs: Sequence[str]) -> list[str]:
    """The image of each item of :func:`pooled_hits` (same order): the clusters of the pooled items."""
    return [img for lang in langs for img in report["item_images"][lang][metric]]


def compare(run: tuple[dict, dict], base: tuple[dict, dict], level: float = 0.95) -> list[dict]:
    """:func:`lugha.training.paired_stats.compare_runs` of two (hits, ids) pairs, Holm over its rows."""
    from lugha.training.paired_stats import compare_runs

    return compare_runs(run[0], base[0], run[1], base[1], level=level)


def merge(*parts: tuple[dict, dict]) -> tuple[dict, dict]:
    """Several (hits, ids) pairs as one, so :func:`compare` corrects them as one Holm family."""
    hits: dict = {}
    ids: dict = {}
    for h, i in parts:
        for lang in h:
            hits.setdefault(lang, {}).update(h[lang])
            ids.setdefault(lang, {}).update(i[lang])
    return hits, ids


def write_outputs(report: dict, html: str, out_dir: str | Path, name: str) -> dict[str, object]:
    """``OUT/<name>.json``, ``OUT/<name>.html`` and each of the page's plots alone as ``OUT/<name>-<k>.svg``
    (k = 1, 2, ... in page order), for a README or a paper; returns their paths (``svg``: a list)."""
    import re

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "html": out / f"{name}.html"}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    for stale in out.glob(f"{name}-*.svg"):  # a rerun with fewer plots leaves none of the old ones behind
        if re.fullmatch(rf"{re.escape(name)}-\d+\.svg", stale.name):
            stale.unlink()
    svgs = []
    for k, svg in enumerate(re.findall(r"<svg\b.*?</svg>", html, flags=re.S), start=1):
        svgs.append(out / f"{name}-{k}.svg")
        svgs[-1].write_text(svg + "\n", encoding="utf-8")
    return {**{k: str(v) for k, v in paths.items()}, "svg": [str(p) for p in svgs]}


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def split_languages(manifest: str, split: str = "test") -> list[str]:
    from lugha.training.data import PairSet

    return list(PairSet(manifest, split).languages)


__all__ = ["Budget", "retrieval_config", "train_or_reuse", "evaluate_cached", "hits_of", "pooled_hits", "pooled_images", "compare",
           "merge", "write_outputs", "split_languages", "PRECISION"]
