"""``lugha eval`` for a ``task: classify`` run: the fusion head's label accuracy per language, and with the
image or the text missing for the heads that skip a missing side (late, cross-attention).

The features go through the run's own frozen-feature cache (same digest as training), so evaluating a
run right after training it costs what the head costs. Rows whose label the head has no class for (a
label unseen in training) count as wrong; ``unknown_labels`` says how many there were.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from lugha.errors import DataError

# accuracy_report's keys that only mean something for a head that skips a missing side
MISSING_KEYS = ("acc_image_only", "acc_text_only")


def _train_labels(cfg, classes: list[str]) -> np.ndarray | None:
    """Class indices of the run's training rows (for the majority-class baseline); None if unreadable."""
    from lugha.training.classify import labelled_pairs

    try:
        pairs = labelled_pairs(cfg.data.manifest, cfg.data.train_split, cfg.data.languages, cfg.classify.label_field)
    except (DataError, OSError):
        return None
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(lb, -1) for lb in pairs.labels], dtype=np.int64)


def evaluate_classify_run(run_dir: str | os.PathLike, manifest: str | os.PathLike | None = None, split: str = "test",
                          checkpoint: str = "best", languages: Sequence[str] = (), batch_size: int = 64,
                          device: str = "auto", cache_dir: str | None = None, show_progress: bool = False) -> dict:
    """Report of ``RUN/<checkpoint>``'s fusion head on ``split`` of ``manifest`` (the run's own by default):
    ``languages`` (per language ``acc``, ``n``, ``majority_acc``, and ``acc_image_only`` / ``acc_text_only``
    when ``skips_missing``) and ``mean`` (unweighted over languages, ``mean_<key>``)."""
    from lugha.training.classify import accuracy_report, load_classify_parts, load_features_for
    from lugha.training.fusion import project_features
    from lugha.training.optim import autocast_for, pick_device, torch_threads

    model, classes, tok, cfg, folder, digest = load_classify_parts(run_dir, checkpoint)
    cc, dc = cfg.classify, cfg.data
    manifest = manifest or dc.manifest
    with torch_threads(cfg.runtime.threads):
        dev = pick_device(device if device != "auto" else cfg.runtime.device)
        autocast, _, precision = autocast_for(dev, cfg.runtime.precision)
        model.to(dev)
        pairs, feats = load_features_for(model, model.cfg, tok, manifest, split, languages, cc.label_field,
                                         kind=cc.head, digest=digest, grid=cc.patch_grid, max_tokens=cc.max_tokens,
                                         batch_size=batch_size, device=dev, autocast=autocast, precision=precision,
                                         cache_dir=cache_dir or dc.cache_dir, image_cache=dc.image_cache,
                                         show_progress=show_progress)
        data = project_features(model, feats, pairs, classes, device=dev)
        head = model.fusion_head.cpu()  # a head runs on the CPU whatever cached the features
        report = accuracy_report(head, data, _train_labels(cfg, classes))
    skips = bool(getattr(head, "skips_missing", False))
    if not skips:  # a head that sees zeros for a missing side has no honest missing-modality number
        for m in report["languages"].values():
            for k in MISSING_KEYS:
                m.pop(k, None)
        for k in MISSING_KEYS:
            report["mean"].pop(f"mean_{k}", None)
    report.update(run=str(run_dir), checkpoint=str(folder), manifest=str(manifest), split=split,
                  model=model.cfg.name, task="classify", head=cc.head, label_field=cc.label_field,
                  classes=list(classes), skips_missing=skips, unknown_labels=int((data.labels < 0).sum()))
    return report


__all__ = ["evaluate_classify_run", "MISSING_KEYS"]
