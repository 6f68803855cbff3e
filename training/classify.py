"""Classification with a fusion head (``task: classify``): manifest labels, cached features, head-speed
training, accuracy per language with both modalities and with each one missing.

Everything below the head is frozen: the towers and projections of ``classify.init_from`` (a retrieval
run: its trained projections or LoRA) or of the config as built. Their outputs go through the frozen-
feature cache once (pooled image and text features; for the cross-attention head also the image's last
feature map pooled to a ``patch_grid`` x ``patch_grid`` grid and the first ``max_tokens`` token features)
and are projected once per split into RAM (:class:`HeadData`), so a training step costs what the head
costs. The projections are linear per position, so a patch or token goes through the same map as the
pooled vector: every head sees one embedding space.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lugha.errors import ConfigError, DataError

from lugha.training.feature_cache import FeatureCache, eval_mode
from lugha.training.fusion import HeadData, cache_features, project_features

# What accuracy_report averages over languages: the names loop.keep_best can pick.
METRICS = ("mean_acc", "mean_acc_image_only", "mean_acc_text_only", "mean_majority_acc")


def labelled_pairs(manifest, split: str, languages, label_field: str):
    """A :class:`~lugha.training.data.PairSet` of the rows that carry ``label_field``, with ``.labels``."""
    from lugha.training.data import PairSet

    pairs = PairSet(manifest, split, languages)
    keep = [i for i, r in enumerate(pairs.records) if getattr(r, label_field)]
    if not keep:
        raise DataError(f"{manifest}: no row of split {split!r} has a {label_field!r}")
    out = copy.copy(pairs)
    out.records = [pairs.records[i] for i in keep]
    out.image_index, out.langs = pairs.image_index[keep], pairs.langs[keep]
    out.groups, out.texts = [pairs.groups[i] for i in keep], [pairs.texts[i] for i in keep]
    out.languages = tuple(sorted(set(out.langs.tolist())))
    out.labels = [getattr(r, label_field) for r in out.records]
    return out


def head_batches(data: HeadData, batch_size: int, seed: int, epoch: int, balance_languages: bool = False):
    """Rows of one epoch in batches, a pure function of (seed, epoch); unlabelled rows never train."""
    from lugha.training.data import epoch_batches

    rows = np.flatnonzero(data.labels >= 0)
    batches = epoch_batches(data.langs[rows], [data.groups[i] for i in rows], batch_size, seed, epoch,
                            balance_languages, unique_groups=False)
    return [rows[b] for b in batches]


def head_loss(head, data: HeadData, rows):
    """The classify step's loss on ``rows``: what :class:`ClassifyTask` gives the loop, and what
    :func:`head_steps` trains on."""
    import torch

    return head.loss(*data.inputs(head.input_kind, rows), labels=torch.from_numpy(data.labels[rows]))


def head_steps(head, data: HeadData, optimizer, scheduler, batch_size: int, seed: int, steps: int,
               start_step: int = 0, balance_languages: bool = False, clip: float | None = 1.0) -> Iterator[float]:
    """Train ``head`` for ``steps`` optimizer steps from ``start_step``; yields each step's loss. The batch
    order depends on (seed, step) only, so a run continued from step k sees what an unbroken one would.

    For experiments that fit many heads in memory (no run folder, no validation, no checkpoints): the same
    batches and loss as a ``task: classify`` run through :class:`lugha.training.loop.Loop`."""
    import torch

    per_epoch, cache = None, {}
    head.train()
    for step in range(start_step, steps):
        if per_epoch is None:
            per_epoch = len(head_batches(data, batch_size, seed, 0, balance_languages))
            if per_epoch == 0:
                raise ConfigError("data.batch_size", f"{batch_size} is more than the {len(data)} training rows")
        epoch, b = divmod(step, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = head_batches(data, batch_size, seed, epoch, balance_languages)
        loss = head_loss(head, data, cache[epoch][b])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in head.parameters() if p.requires_grad], clip)
        optimizer.step()
        scheduler.step()
        yield float(loss.item())


def predict(head, data: HeadData, missing: str | None = None, batch_size: int = 512) -> np.ndarray:
    """Logits [N, C] in eval mode, with ``missing`` (``image``/``text``) zeroed."""
    import torch

    out = []
    with eval_mode(head), torch.no_grad():
        for i in range(0, len(data), batch_size):
            rows = np.arange(i, min(i + batch_size, len(data)))
            out.append(head(*data.inputs(head.input_kind, rows, missing)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.num_classes), np.float32)


def accuracy_report(head, data: HeadData, train_labels: np.ndarray | None = None) -> dict:
    """Per language: ``acc`` (both modalities), ``acc_image_only`` (text missing), ``acc_text_only``
    (image missing), ``n``, and ``majority_acc`` (always the most common training class); ``mean``:
    the unweighted mean over languages of each (``mean_acc``...)."""
    preds = {name: predict(head, data, missing).argmax(1) for name, missing in
             (("acc", None), ("acc_image_only", "text"), ("acc_text_only", "image"))}
    majority = int(np.bincount(train_labels[train_labels >= 0]).argmax()) if train_labels is not None else None
    per_lang: dict[str, dict] = {}
    for lang in sorted(set(data.langs.tolist())):
        rows = np.flatnonzero(data.langs == lang)
        m = {k: float((p[rows] == data.labels[rows]).mean()) for k, p in preds.items()}
        m["n"] = int(len(rows))
        if majority is not None:
            m["majority_acc"] = float((data.labels[rows] == majority).mean())
        per_lang[lang] = m
    keys = [k for k in next(iter(per_lang.values()), {}) if k != "n"]
    mean = {f"mean_{k}": float(np.mean([m[k] for m in per_lang.values()])) for k in keys}
    return {"languages": per_lang, "mean": mean}


def split_classes(labels: list[str], where: str) -> list[str]:
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{where}: need at least 2 classes to train a classifier, found {classes}")
    return classes


def head_kwargs(cfg) -> dict:
    """``build_head`` keyword arguments from a ClassifyConfig."""
    return {"hidden": cfg.hidden, "dropout": cfg.dropout, "late_weights": cfg.late_weights,
            "attn_heads": cfg.attn_heads, "num_patches": cfg.patch_grid ** 2, "max_tokens": cfg.max_tokens}


def input_kind_of(kind: str) -> str:
    return "tokens" if kind == "xattn" else "embeds"


def load_features_for(model, model_cfg, tokenizer, manifest, split, languages, label_field, *, kind: str,
                      digest: str, grid: int, max_tokens: int, batch_size: int, device, autocast, precision: str,
                      cache_dir=None, image_cache: bool = True, num_workers: int = 0,
                      show_progress: bool = True) -> tuple:
    """(labelled pairs, cached features) of one split for a head of ``kind``. ``digest``: the model's
    :func:`~lugha.training.feature_cache.frozen_weights_digest` with its adapter as applied (projections
    still trainable), so a retrieval run of the same model and data shares the pooled caches."""
    from lugha.training.data import ImageStore

    pairs = labelled_pairs(manifest, split, languages, label_field)
    store = ImageStore(pairs.image_paths, model_cfg.preprocess, cache_dir, image_cache)
    store.build(num_workers, show_progress)
    fc = FeatureCache(digest, model_cfg.to_dict(), precision, cache_dir)
    feats = cache_features(model, tokenizer, pairs, store, fc, batch_size=batch_size, device=device,
                           autocast=autocast, tokens=input_kind_of(kind) == "tokens", grid=grid,
                           max_tokens=max_tokens, desc=split or "all", show_progress=show_progress)
    return pairs, feats


def freeze(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


class ClassifyTask:
    """``task: classify`` for :class:`lugha.training.loop.Loop`: features cached and projected once, then
    the head trains at head speed on the CPU; checkpoints hold the head's tensors only."""

    def __init__(self, cfg, run_dir: Path, resume: bool, show_progress: bool, say: Callable[[str], None]):
        import torch

        from lugha.training.feature_cache import frozen_weights_digest
        from lugha.training.fusion import build_head, count_head_parameters
        from lugha.training.optim import autocast_for, pick_device

        self.cfg = cfg
        cc, dc, rt = cfg.classify, cfg.data, cfg.runtime
        if dc.val_split and cfg.loop.keep_best not in METRICS:  # fail before minutes of feature caching
            raise ConfigError("loop.keep_best", f"{cfg.loop.keep_best!r} is not a classify metric; known: {METRICS}")
        device = pick_device(rt.device)
        autocast, _, precision = autocast_for(device, rt.precision)
        self.towers, tok, self.model_cfg = load_frozen_model(cfg)
        self.towers.to(device)
        digest = frozen_weights_digest(self.towers)

        def load(split: str):
            return load_features_for(self.towers, self.model_cfg, tok, dc.manifest, split, dc.languages,
                                     cc.label_field, kind=cc.head, digest=digest, grid=cc.patch_grid,
                                     max_tokens=cc.max_tokens, batch_size=dc.batch_size, device=device,
                                     autocast=autocast, precision=precision, cache_dir=dc.cache_dir,
                                     image_cache=dc.image_cache, num_workers=dc.num_workers,
                                     show_progress=show_progress)

        train_pairs, train_feats = load(dc.train_split)
        val = None
        if dc.val_split:
            try:
                val = load(dc.val_split)
            except DataError as e:
                say(f"no validation ({e}); RUN/best will be the last checkpoint")
        freeze(self.towers)
        self.digest = frozen_weights_digest(self.towers)
        self.classes = split_classes(train_pairs.labels, f"{dc.manifest} split {dc.train_split!r}")
        self.train = project_features(self.towers, train_feats, train_pairs, self.classes, device=device)
        self.val = project_features(self.towers, val[1], val[0], self.classes, device=device) if val else None
        self.model = build_head(cc.head, len(self.classes), self.model_cfg.embed_dim, seed=rt.seed, **head_kwargs(cc))
        # a head trains at head speed on the CPU, whatever cached the features
        self.device = self.optim_device = torch.device("cpu")
        self.use_scaler, self.frozen = False, []
        say(f"{cc.head} fusion head: {count_head_parameters(self.model):,} trainable parameters, "
            f"{len(self.classes)} classes ({cc.label_field}), {len(self.train)} training rows")

    def start_fresh(self) -> None:
        self.model.prepare(self.train)

    def batches(self, epoch: int) -> list:
        dc = self.cfg.data
        return head_batches(self.train, dc.batch_size, self.cfg.runtime.seed, epoch, dc.balance_languages)

    def source(self, epoch: int, batches: list):
        return iter(batches)

    def loss(self, rows):
        return head_loss(self.model, self.train, rows)

    def evaluate(self) -> dict | None:
        return None if self.val is None else accuracy_report(self.model, self.val, self.train.labels)

    def trainable_tensors(self) -> dict:
        return {f"fusion_head.{k}": v for k, v in self.model.state_dict().items()}

    def load_trainable(self, tensors: dict) -> None:
        self.model.load_state_dict(head_state(tensors))

    def meta(self) -> dict:
        cc = self.cfg.classify
        return {"classes": self.classes, "head": cc.head, "label_field": cc.label_field}


def head_state(tensors: dict) -> dict:
    return {k[len("fusion_head."):]: v for k, v in tensors.items() if k.startswith("fusion_head.")}


def load_frozen_model(cfg):
    """(model, tokenizer, model config) under a classify head, every parameter frozen: the ``init_from``
    retrieval run's best checkpoint, or the config's model as built."""
    from lugha.training import checkpoint as ckpt

    if cfg.classify.init_from:
        model, tok, model_cfg, _, _ = ckpt.load_run_model(cfg.classify.init_from, "best")
    else:
        model_cfg = cfg.model_config()
        model, tok = ckpt.build_for_training(cfg, model_cfg)
    return model, tok, model_cfg


def load_classify_parts(run_dir, which: str = "best"):
    """(model with ``model.fusion_head`` loaded, classes, tokenizer, train config, checkpoint folder,
    feature-cache digest). The digest is taken as training took it (before everything froze), so an
    evaluation reads the features the run cached."""
    from lugha.training import checkpoint as ckpt
    from lugha.training.feature_cache import frozen_weights_digest
    from lugha.training.fusion import build_head

    folder = ckpt.find_checkpoint(run_dir, which)
    cfg = ckpt.load_train_config(folder / ckpt.TRAIN_CONFIG)
    if cfg.task != "classify":
        raise ConfigError("task", f"{folder}: a {cfg.task!r} run, not a classify run")
    tensors, meta, _ = ckpt.load_checkpoint(folder, with_state=False)
    model, tok, model_cfg = load_frozen_model(cfg)
    cache_digest = frozen_weights_digest(model)
    freeze(model)
    ckpt.check_frozen_digest(meta, frozen_weights_digest(model), folder)
    head = build_head(meta["head"], len(meta["classes"]), model_cfg.embed_dim, seed=cfg.runtime.seed,
                      **head_kwargs(cfg.classify))
    head.load_state_dict(head_state(tensors))
    # what an export needs to know: the labels in logit order, and the record field they come from
    head.classes, head.label_field = list(meta["classes"]), cfg.classify.label_field
    model.fusion_head = head.eval().requires_grad_(False)  # loaded for inference and export
    return model.eval(), meta["classes"], tok, cfg, folder, cache_digest


def load_classify_run(run_dir, which: str = "best"):
    """(model with ``model.fusion_head`` loaded, classes, tokenizer, train config): ready for
    :func:`lugha.export.specs.specs_for`, or for ``model.fusion_head(img_emb, txt_emb)``."""
    return load_classify_parts(run_dir, which)[:4]


def is_classify_run(run_dir, which: str = "best") -> bool:
    """Whether ``RUN/<which>`` was trained with ``task: classify`` (reads its config only)."""
    from lugha.training import checkpoint as ckpt

    folder = ckpt.find_checkpoint(run_dir, which)
    return ckpt.load_train_config(folder / ckpt.TRAIN_CONFIG).task == "classify"


__all__ = ["HeadData", "labelled_pairs", "cache_features", "project_features", "head_batches", "head_loss", "head_steps",
           "predict", "accuracy_report", "ClassifyTask", "load_classify_run",
           "load_classify_parts", "is_classify_run", "load_features_for"]
