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


def head_steps(head, data: HeadData, optimizer, scheduler, batch_size: int, seed: int, steps: int,
               start_step: int = 0, balance_languages: bool = False, clip: float | None = 1.0) -> Iterator[float]:
    """Train ``head`` for ``steps`` optimizer steps from ``start_step``; yields each step's loss. The batch
    order depends on (seed, step) only, so a run continued from step k sees what an unbroken one would."""
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
        rows = cache[epoch][b]
        loss = head.loss(*data.inputs(head.input_kind, rows), labels=torch.from_numpy(data.labels[rows]))
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


class ClassifyRun:
    """One ``task: classify`` run: features cached and projected once, then the head trains with the
    run's optimizer, schedule, validation, best/last checkpoints (head tensors only) and exact resume."""

    def __init__(self, cfg, run_dir: Path, resume: bool, show_progress: bool, say: Callable[[str], None]):
        import random

        import torch

        from lugha.training import checkpoint as ckpt
        from lugha.training.feature_cache import frozen_weights_digest
        from lugha.training.fusion import build_head
        from lugha.training.optim import autocast_for, make_optimizer, make_scheduler, pick_device
        from lugha.training.run_log import RunLog

        self.cfg, self.run_dir, self.say = cfg, run_dir, say
        cc, dc, rt = cfg.classify, cfg.data, cfg.runtime
        if dc.val_split and cfg.loop.keep_best not in METRICS:  # fail before minutes of feature caching
            raise ConfigError("loop.keep_best", f"{cfg.loop.keep_best!r} is not a classify metric; known: {METRICS}")
        random.seed(rt.seed)
        np.random.seed(rt.seed)
        torch.manual_seed(rt.seed)
        device = pick_device(rt.device)
        autocast, _, precision = autocast_for(device, rt.precision)
        self.model, tok, self.model_cfg = load_frozen_model(cfg)
        self.model.to(device)
        if not resume:
            ckpt.write_configs(run_dir, cfg, self.model_cfg)

        digest = frozen_weights_digest(self.model)

        def load(split: str):
            return load_features_for(self.model, self.model_cfg, tok, dc.manifest, split, dc.languages,
                                     cc.label_field, kind=cc.head, digest=digest, grid=cc.patch_grid,
                                     max_tokens=cc.max_tokens,
                                     batch_size=dc.batch_size, device=device, autocast=autocast, precision=precision,
                                     cache_dir=dc.cache_dir, image_cache=dc.image_cache, num_workers=dc.num_workers,
                                     show_progress=show_progress)

        train_pairs, train_feats = load(dc.train_split)
        val = None
        if dc.val_split:
            try:
                val = load(dc.val_split)
            except DataError as e:
                say(f"no validation ({e}); RUN/best will be the last checkpoint")
        freeze(self.model)
        self.digest = frozen_weights_digest(self.model)
        self.classes = split_classes(train_pairs.labels, f"{dc.manifest} split {dc.train_split!r}")
        self.train = project_features(self.model, train_feats, train_pairs, self.classes, device=device)
        self.val = project_features(self.model, val[1], val[0], self.classes, device=device) if val else None
        self.head = build_head(cc.head, len(self.classes), self.model_cfg.embed_dim, seed=rt.seed, **head_kwargs(cc))
        self.per_epoch = len(head_batches(self.train, dc.batch_size, rt.seed, 0, dc.balance_languages))
        if self.per_epoch == 0:
            raise ConfigError("data.batch_size", f"{dc.batch_size} is more than the {len(self.train)} training rows")
        self.total = min(cfg.loop.max_steps or 1 << 62, cfg.loop.epochs * self.per_epoch)
        cpu = torch.device("cpu")  # a head trains at head speed on the CPU, whatever cached the features
        self.optimizer = make_optimizer(self.head, cfg.optim, cpu)
        self.sched = make_scheduler(self.optimizer, cfg.optim, self.total)
        self.pos = {"step": 0, "best": None, "bad_evals": 0, "losses": []}
        self.last_eval: dict | None = None
        if resume:
            tensors, meta, state = ckpt.load_checkpoint(ckpt.find_checkpoint(run_dir, "last"))
            ckpt.check_frozen_digest(meta, self.digest, run_dir / "last")
            self.head.load_state_dict(head_state(tensors))
            self.optimizer.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.pos.update(state["position"])
            ckpt.set_rng_state(state["rng"])
            say(f"resuming {run_dir} at step {self.pos['step']}")
        else:
            self.head.prepare(self.train)
            torch.manual_seed(rt.seed)
        self.log = RunLog(run_dir, self.pos["step"] if resume else None, say)
        from lugha.training.fusion import count_head_parameters

        say(f"{cc.head} fusion head: {count_head_parameters(self.head):,} trainable parameters, "
            f"{len(self.classes)} classes ({cc.label_field}), {len(self.train)} training rows")

    def validate(self) -> bool:
        if self.val is None:
            return True
        report = accuracy_report(self.head, self.val, self.train.labels)
        key, pos = self.cfg.loop.keep_best, self.pos
        self.last_eval, score = report, report["mean"][key]
        self.log.write({"kind": "eval", "step": pos["step"], **report["mean"]})
        better = pos["best"] is None or score > pos["best"]
        pos["best"], pos["bad_evals"] = (score, 0) if better else (pos["best"], pos["bad_evals"] + 1)
        self.say(f"step {pos['step']}: val {key} {score:.4f}" + (" (best)" if better else ""))
        return better

    def save(self, best_too: bool) -> None:
        from lugha.training import checkpoint as ckpt

        cc = self.cfg.classify
        meta = {"step": self.pos["step"], "epoch": self.pos["step"] // self.per_epoch, "frozen_digest": self.digest,
                "metrics": self.last_eval["mean"] if self.last_eval else None, "classes": self.classes,
                "head": cc.head, "label_field": cc.label_field}
        tensors = {f"fusion_head.{k}": v for k, v in self.head.state_dict().items()}
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(),
                 "rng": ckpt.rng_state(), "position": dict(self.pos)}
        ckpt.save_checkpoint(self.run_dir / "last", tensors, self.cfg, self.model_cfg, meta, state)
        if best_too:
            ckpt.save_checkpoint(self.run_dir / "best", tensors, self.cfg, self.model_cfg, meta)

    def fit(self, stop_after_steps: int | None = None):
        import time

        from lugha.training.trainer import TrainResult

        lp, dc, pos, seconds, t0 = self.cfg.loop, self.cfg.data, self.pos, [], time.perf_counter()
        stopped = "done" if self.total == lp.epochs * self.per_epoch else "max_steps"
        steps = head_steps(self.head, self.train, self.optimizer, self.sched, dc.batch_size, self.cfg.runtime.seed,
                           self.total, pos["step"], dc.balance_languages, self.cfg.optim.clip_grad_norm)
        for loss in steps:
            pos["step"] += 1
            pos["losses"].append(loss)
            step = pos["step"]
            if step % lp.log_every == 0 or step == 1:
                self.log.write({"kind": "train", "step": step, "loss": loss, "lr": self.sched.get_last_lr()[0]})
            epoch_end = step % self.per_epoch == 0 or step == self.total
            best_now = self.validate() if epoch_end or (lp.eval_every and step % lp.eval_every == 0) else False
            if epoch_end:
                seconds.append(time.perf_counter() - t0)
                self.log.write({"kind": "epoch", "step": step, "epoch": (step - 1) // self.per_epoch,
                                "seconds": seconds[-1], "loss": float(np.mean(pos["losses"]))})
                pos["losses"], t0 = [], time.perf_counter()
            patience_out = bool(lp.patience and pos["bad_evals"] >= lp.patience)
            interrupted = stop_after_steps is not None and step >= stop_after_steps and step < self.total
            if best_now or epoch_end or patience_out or interrupted or (
                    lp.checkpoint_every and step % lp.checkpoint_every == 0):
                self.save(best_now)
            if patience_out or interrupted:
                stopped = "early_stop" if patience_out else "interrupted"
                break
        self.log.close()
        return TrainResult(self.run_dir, pos["step"], -(-pos["step"] // self.per_epoch), pos["best"], stopped,
                           seconds, self.last_eval)


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


def train_classify(cfg, run_dir, resume: bool = False, stop_after_steps: int | None = None,
                   show_progress: bool = True, say: Callable[[str], None] = print):
    """``task: classify``, called by :func:`lugha.training.trainer.train` after it prepared ``run_dir``."""
    return ClassifyRun(cfg, Path(run_dir), resume, show_progress, say).fit(stop_after_steps)


__all__ = ["HeadData", "labelled_pairs", "cache_features", "project_features", "head_batches", "head_steps",
           "predict", "accuracy_report", "ClassifyRun", "train_classify", "load_classify_run",
           "load_classify_parts", "is_classify_run", "load_features_for"]
