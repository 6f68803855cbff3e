"""Evaluation: retrieval recall@k both ways and zero-shot label accuracy, per language, with chance levels.

The metric functions at the top are pure numpy (tested on hand-made embeddings with known answers);
:func:`evaluate_embeddings` turns a split's embeddings into the report, :func:`embed_pairs` makes those
embeddings with a model (torch), and :func:`evaluate_run` does both for a saved run.

Retrieval is within each language: the distinct images of that language's rows against that language's
texts. Ground truth is by group (``Record.group_key``): one image can have several matching texts, and
an image->text query is a hit at k when ANY of its texts ranks in the top k. Ties count against the
model (a constant embedding scores chance, not 100%).
"""
from __future__ import annotations

import json
import os
from math import prod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

KS = (1, 5, 10)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def recall_at_k(scores: np.ndarray, positives: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    """Fraction of queries (rows) whose best-scoring positive has fewer than k candidates scoring at
    least as high (ties pessimistic). ``positives``: bool ``[Q, C]``; a query without positives is skipped."""
    n_above = _negatives_above(scores, positives)
    if not len(n_above):
        return {k: float("nan") for k in ks}
    return {k: float((n_above < k).mean()) for k in ks}


def hits_at_k(scores: np.ndarray, positives: np.ndarray, k: int = 1) -> np.ndarray:
    """Per query (queries without positives left out, as in :func:`recall_at_k`): a hit at k or not.
    Its mean is ``recall_at_k``; the paired gates compare these per item."""
    return _negatives_above(scores, positives) < k


def _negatives_above(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per query with a positive: how many non-matching candidates score at least as high as its best match."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    has = positives.any(axis=1)
    scores, positives = scores[has], positives[has]
    if not len(scores):
        return np.zeros(0, dtype=np.int64)
    best_pos = np.where(positives, scores, -np.inf).max(axis=1)
    return ((scores >= best_pos[:, None]) & ~positives).sum(axis=1)


def chance_recall(n_candidates: int, n_positives: Sequence[int], k: int) -> float:
    """Expected recall@k of a uniformly random ranking: 1 - C(N-m, k) / C(N, k), averaged over queries."""
    def one(m: int) -> float:
        if m <= 0:
            return float("nan")
        if n_candidates - m < k:
            return 1.0
        return 1.0 - prod((n_candidates - m - j) / (n_candidates - j) for j in range(k))

    vals = [one(int(m)) for m in n_positives if m > 0]
    return float(np.mean(vals)) if vals else float("nan")


def retrieval_metrics(img_emb: np.ndarray, txt_emb: np.ndarray, img_groups: Sequence[str],
                      txt_groups: Sequence[str], ks: Sequence[int] = KS) -> dict[str, float]:
    """``i2t_r{k}``, ``t2i_r{k}`` and their ``chance_*`` for one pool of images and texts."""
    sim = l2_normalize(img_emb) @ l2_normalize(txt_emb).T
    match = np.asarray(img_groups, dtype=object)[:, None] == np.asarray(txt_groups, dtype=object)[None, :]
    i2t, t2i = recall_at_k(sim, match, ks), recall_at_k(sim.T, match.T, ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"], out[f"t2i_r{k}"] = i2t[k], t2i[k]
        out[f"chance_i2t_r{k}"] = chance_recall(match.shape[1], match.sum(axis=1), k)
        out[f"chance_t2i_r{k}"] = chance_recall(match.shape[0], match.sum(axis=0), k)
    return out


def retrieval_hits(img_emb: np.ndarray, txt_emb: np.ndarray, img_groups: Sequence[str],
                   txt_groups: Sequence[str]) -> dict[str, np.ndarray]:
    """Per item R@1 hits: ``i2t_r1`` per image, ``t2i_r1`` per text (the items :func:`retrieval_metrics` averages)."""
    sim = l2_normalize(img_emb) @ l2_normalize(txt_emb).T
    match = np.asarray(img_groups, dtype=object)[:, None] == np.asarray(txt_groups, dtype=object)[None, :]
    return {"i2t_r1": hits_at_k(sim, match), "t2i_r1": hits_at_k(sim.T, match.T)}


def label_accuracy(img_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]) -> float:
    """Zero-shot accuracy: each image takes the class whose text embedding is nearest (cosine);
    ties go to no class (count as wrong), like ties in recall."""
    return float(label_hits(img_emb, class_emb, labels).mean()) if len(labels) else float("nan")


def label_hits(img_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Per image: its nearest class is its label (and no other class ties it)."""
    sim = l2_normalize(img_emb) @ l2_normalize(class_emb).T
    labels = np.asarray(labels)
    top = sim.max(axis=1, keepdims=True)
    unique_top = (sim >= top).sum(axis=1) == 1
    return (sim.argmax(axis=1) == labels) & unique_top


def retention(run: dict[str, float], baseline: dict[str, float], keys: Sequence[str]) -> dict[str, float]:
    """Percent of the baseline's metric kept by the run (100 = no loss); nan when the baseline is 0."""
    return {k: (100.0 * run[k] / baseline[k] if baseline.get(k) else float("nan")) for k in keys if k in run}


def summarise(per_lang: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over languages of every metric, plus ``mean_r1`` = mean of i2t and t2i R@1."""
    keys = sorted({k for m in per_lang.values() for k, v in m.items() if isinstance(v, float)})
    mean = {k: float(np.nanmean([m[k] for m in per_lang.values() if k in m])) for k in keys}
    mean["mean_r1"] = (mean["i2t_r1"] + mean["t2i_r1"]) / 2 if "i2t_r1" in mean else float("nan")
    return mean


def load_label_names(manifest: str | os.PathLike) -> tuple[dict[str, dict[str, str]], str]:
    """Per-language label names from ``labels.json`` beside the manifest (``{lang: {label: name}}``),
    else ``{}``: labels are then used as written in the manifest (the demo: CLDR group names in English)."""
    path = Path(manifest).parent / "labels.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), f"per-language label names from {path.name}"
    return {}, "label names as written in the manifest (English), no per-language map"


def evaluate_embeddings(pairs, img_emb: np.ndarray, txt_emb: np.ndarray,
                        encode_texts: Callable[[list[str]], np.ndarray] | None = None,
                        label_names: dict[str, dict[str, str]] | None = None, items: bool = False) -> dict:
    """The report for one split. ``pairs``: a :class:`lugha.training.data.PairSet`; ``img_emb`` rows
    follow ``pairs.image_paths``, ``txt_emb`` rows follow ``pairs.records``. ``encode_texts`` (label
    prompts -> embeddings) enables label accuracy for rows that carry a ``label``.

    ``items``: also ``report["items"][lang][metric]``, the per-item R@1 / label hits (bool arrays) the
    metrics average, and ``report["item_ids"]`` naming those items (image paths, text record ids), so
    two models can be compared item by item (:mod:`lugha.training.paired_stats`), and
    ``report["item_images"]`` the image each item belongs to (captions of one image in several languages
    are one cluster: :mod:`lugha.training.cluster_stats`)."""
    label_names = label_names or {}
    hits: dict[str, dict[str, np.ndarray]] = {}
    ids: dict[str, dict[str, list[str]]] = {}
    images: dict[str, dict[str, list[str]]] = {}
    img_group = {}
    for r, ii in zip(pairs.records, pairs.image_index):
        img_group.setdefault(int(ii), r.group_key)
    per_lang: dict[str, dict[str, float]] = {}
    for lang in pairs.languages:
        rows = np.flatnonzero(pairs.langs == lang)
        imgs = sorted({int(pairs.image_index[i]) for i in rows})
        m: dict = {"n_images": len(imgs), "n_texts": len(rows)}
        groups = [img_group[i] for i in imgs], [pairs.records[i].group_key for i in rows]
        m.update(retrieval_metrics(img_emb[imgs], txt_emb[rows], *groups))
        if items:
            hits[lang] = retrieval_hits(img_emb[imgs], txt_emb[rows], *groups)
            ids[lang] = {"i2t_r1": [pairs.image_paths[i] for i in imgs], "t2i_r1": [_row_id(pairs, i) for i in rows]}
            images[lang] = {"i2t_r1": ids[lang]["i2t_r1"],
                            "t2i_r1": [pairs.image_paths[int(pairs.image_index[i])] for i in rows]}
        labelled = {}
        for i in rows:
            if pairs.records[i].label:
                labelled.setdefault(int(pairs.image_index[i]), pairs.records[i].label)
        if encode_texts is not None and labelled:
            classes = sorted(set(labelled.values()))
            names = label_names.get(lang, {})
            class_emb = encode_texts([names.get(c, c) for c in classes])
            idx = list(labelled)
            per_image = label_hits(img_emb[idx], class_emb, [classes.index(labelled[i]) for i in idx])
            m["label_acc"] = float(per_image.mean())  # label_accuracy(), from the hits the gate pairs
            if items:
                hits[lang]["label_acc"], ids[lang]["label_acc"] = per_image, [pairs.image_paths[i] for i in idx]
                images[lang]["label_acc"] = ids[lang]["label_acc"]
            m["chance_label_acc"] = 1.0 / len(classes)
            m["n_labels"] = len(classes)
            m["n_labelled"] = len(idx)  # the images label_acc is a fraction of
        per_lang[lang] = m
    report = {"languages": per_lang, "mean": summarise(per_lang)}
    if items:
        report.update(items=hits, item_ids=ids, item_images=images)
    return report


def _row_id(pairs, i: int) -> str:
    """A text row's identity across runs: its manifest id, else its language, group and text."""
    r = pairs.records[i]
    return getattr(r, "id", "") or f"{r.lang}:{r.group_key}:{r.text}"


def embed_pairs(model, pairs, store, tokenizer, batch_size: int, device, autocast, image_features=None,
                text_features=None, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Projected (not normalised) embeddings of a split's distinct images and its texts, in eval mode.
    ``image_features`` / ``text_features``: cached tower outputs; only the projection then runs."""
    import torch

    from lugha.training.feature_cache import compute_image_features, compute_text_features, eval_mode

    def project(feats_iter, proj) -> np.ndarray:
        out = []
        with eval_mode(model), torch.no_grad():
            for block in feats_iter:
                with autocast():
                    out.append(proj(torch.as_tensor(np.array(block, dtype=np.float32), device=device)).float().cpu().numpy())
        return np.concatenate(out)

    def chunks(arr):
        return (arr[i:i + batch_size] for i in range(0, len(arr), batch_size))

    img = project(chunks(image_features) if image_features is not None else compute_image_features(
        model, store, batch_size, device, autocast, channels_last=channels_last), model.project_image)
    txt = project(chunks(text_features) if text_features is not None else compute_text_features(
        model, tokenizer, pairs.texts, batch_size, device, autocast), model.project_text)
    return img, txt


def text_encoder(model, tokenizer, batch_size: int, device, autocast) -> Callable[[list[str]], np.ndarray]:
    """``texts -> embeddings`` for label prompts."""
    import torch

    from lugha.training.feature_cache import compute_text_features, eval_mode

    def encode(texts: list[str]) -> np.ndarray:
        with eval_mode(model), torch.no_grad():
            feats = np.concatenate(list(compute_text_features(model, tokenizer, texts, batch_size, device, autocast)))
            with autocast():
                return model.project_text(torch.as_tensor(feats, device=device)).float().cpu().numpy()

    return encode


def evaluate_run(run_dir: str | os.PathLike, manifest: str | os.PathLike | None = None, split: str = "test",
                 checkpoint: str = "best", languages: Sequence[str] = (), batch_size: int = 64,
                 device: str = "auto", cache_dir: str | None = None, items: bool = False) -> dict:
    """Load ``RUN/<checkpoint>`` and evaluate it on ``split`` of ``manifest`` (the run's own by default);
    ``items``: with the per-item hits (:func:`evaluate_embeddings`)."""
    from lugha.training.checkpoint import load_run_model
    from lugha.training.optim import torch_threads

    model, tokenizer, model_cfg, train_cfg, ckpt = load_run_model(run_dir, checkpoint)
    with torch_threads(train_cfg.runtime.threads):
        return _evaluate_loaded(model, tokenizer, model_cfg, train_cfg, ckpt, run_dir, manifest, split, languages,
                                batch_size, device, cache_dir, items)


def _evaluate_loaded(model, tokenizer, model_cfg, train_cfg, ckpt, run_dir, manifest, split, languages,
                     batch_size, device, cache_dir, items=False) -> dict:
    from lugha.training.data import ImageStore, PairSet
    from lugha.training.optim import autocast_for, pick_device

    dev = pick_device(device if device != "auto" else train_cfg.runtime.device)
    model.to(dev)
    manifest = manifest or train_cfg.data.manifest
    pairs = PairSet(manifest, split, languages)
    store = ImageStore(pairs.image_paths, model_cfg.preprocess, cache_dir or train_cfg.data.cache_dir,
                       use_cache=train_cfg.data.image_cache)
    store.build(show_progress=False)
    autocast = autocast_for(dev, train_cfg.runtime.precision)[0]
    img, txt = embed_pairs(model, pairs, store, tokenizer, batch_size, dev, autocast)
    names, label_source = load_label_names(manifest)
    report = evaluate_embeddings(pairs, img, txt, text_encoder(model, tokenizer, batch_size, dev, autocast), names,
                                 items=items)
    report.update(run=str(run_dir), checkpoint=str(ckpt), manifest=str(manifest), split=split,
                  model=model_cfg.name, label_source=label_source)
    return report
