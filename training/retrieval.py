"""The retrieval task (``task: retrieval``): the contrastive dual encoder's batches, loss and validation,
plugged into :class:`lugha.training.loop.Loop`.

Frozen towers' features come from the feature cache when ``runtime.feature_cache`` is on (computed once,
memory-mapped), so projection-only training runs at head speed; everything else runs live each step.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.training import checkpoint as ckpt
from lugha.training.data import ImageStore, PairSet, batch_source, epoch_batches, pad_to_bucket, to_model_input
from lugha.training.distributed import Dist, check_batch, global_batch_loss, rank_batches, shard_bounds, wrap_ddp
from lugha.training.evaluate import embed_pairs, evaluate_embeddings, load_label_names, text_encoder
from lugha.training.feature_cache import (FeatureCache, compute_image_features, compute_text_features,
                                          frozen_weights_digest, image_inputs_key, text_inputs_key)
from lugha.training.optim import autocast_for, pick_device


def frozen_modules(model) -> list:
    """The outermost sub-modules that have parameters and none training. Put in eval mode each epoch,
    frozen BatchNorm keeps its statistics and frozen dropout stays off, exactly as when their features
    were cached (LoRA's own dropout, parameter-free, keeps training mode)."""
    out: list = []

    def visit(m) -> None:
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return out


class RetrievalTask:
    """The model, its data and its feature caches, set up once; then batches and losses for the loop.
    Under torchrun (``dist``) each rank trains on its slice of every global batch, the model wrapped in
    DistributedDataParallel and the loss taken over the gathered global batch."""

    def __init__(self, cfg, run_dir: Path, resume: bool, show_progress: bool, say: Callable[[str], None],
                 dist: Dist | None = None, device=None):
        import torch

        from lugha.training.adapters import count_parameters

        self.cfg, self.show_progress, self.say, self.dist = cfg, show_progress, say, dist or Dist()
        rt, dc = cfg.runtime, cfg.data
        check_batch(dc.batch_size, self.dist)
        self.device = self.optim_device = device if device is not None else pick_device(rt.device)
        self.autocast, self.use_scaler, precision = autocast_for(self.device, rt.precision)
        self.model_cfg = cfg.model_config()
        self.model, self.tokenizer = ckpt.build_for_training(cfg, self.model_cfg)
        self.model.to(self.device)
        if rt.channels_last:
            self.model.set_channels_last(True)
        self.digest = frozen_weights_digest(self.model)
        n_train, n_total = count_parameters(self.model)
        say(f"model {self.model_cfg.name} ({self.model_cfg.adapter.kind}): {n_train:,} trainable of "
            f"{n_total:,} parameters; device {self.device}, precision {precision}")

        self.pairs = {"train": PairSet(dc.manifest, dc.train_split, dc.languages)}
        if dc.val_split:
            try:
                self.pairs["val"] = PairSet(dc.manifest, dc.val_split, dc.languages)
            except Exception as e:  # noqa: BLE001 - a run without a validation split still trains
                say(f"no validation ({e}); RUN/best will be the last checkpoint")
        self.stores = {n: ImageStore(p.image_paths, self.model_cfg.preprocess, dc.cache_dir, dc.image_cache)
                       for n, p in self.pairs.items()}
        for store in self.stores.values():  # node-local rank 0 decodes, the others wait and map its file
            store.build(dc.num_workers, show_progress, rank=self.dist.local_rank,
                        barrier=self.dist.barrier if self.dist.active else None)
        self.img_frozen, self.txt_frozen = bool(self.model.image_tower_frozen), bool(self.model.text_tower_frozen)
        self.feats = self._cache_features(precision) if rt.feature_cache else {}
        self._feats_dev: dict = {}
        self.frozen = frozen_modules(self.model)
        self.image_fn = torch.compile(self.model.image_features) if rt.compile else self.model.image_features
        self.text_fn = torch.compile(self.model.text_features) if rt.compile else self.model.text_features
        self.label_names = load_label_names(dc.manifest)[0]
        # the step as a module: DDP hooks its gradients' all-reduce into the backward of what it returns
        self.step = global_batch_loss(self.model, self._embed, self.autocast, self.dist)
        self.ddp = wrap_ddp(self.step, self.dist, self.device) if self.dist.active else None

    def _cache_features(self, precision: str) -> dict:
        """Frozen towers' features of each split, as sharded memmaps: every rank encodes its shards, so a
        cache built by N ranks serves a run on any number (:meth:`FeatureCache.get_or_build_sharded`)."""
        m, dc, rt, d = self.model, self.cfg.data, self.cfg.runtime, self.dist
        if not (self.img_frozen or self.txt_frozen):
            return {}
        fc, feats = FeatureCache(self.digest, self.model_cfg.to_dict(), precision, dc.cache_dir), {}
        ranks = dict(rank=d.rank, world_size=d.world_size, barrier=d.barrier if d.active else None,
                     show_progress=self.show_progress)
        for name, pairs in self.pairs.items():
            if self.img_frozen:
                feats[name, "image"] = fc.get_or_build_sharded(
                    "image", image_inputs_key(self.stores[name]), len(pairs.image_paths), lambda r, n=name: (
                        compute_image_features(m, self.stores[n], dc.batch_size, self.device, self.autocast,
                                               dc.num_workers, rt.channels_last, rows=r)),
                    desc=f"image features ({name})", **ranks)
            if self.txt_frozen:
                feats[name, "text"] = fc.get_or_build_sharded(
                    "text", text_inputs_key(pairs.texts), len(pairs), lambda r, p=pairs: (
                        compute_text_features(m, self.tokenizer, p.texts[r.start:r.stop], dc.batch_size,
                                              self.device, self.autocast)),
                    desc=f"text features ({name})", **ranks)
        if self.img_frozen and dc.augment != "none":
            self.say(f"data.augment={dc.augment} is not applied: the frozen image tower's features are cached")
        return feats

    # -- what the loop calls -------------------------------------------------------------------------------
    def start_fresh(self) -> None:
        if self.cfg.init_from:
            self.say(ckpt.init_trainable_from(self.model, self.cfg.init_from, self.model_cfg))

    def batches(self, epoch: int) -> list[list[int]]:
        dc, p = self.cfg.data, self.pairs["train"]
        return epoch_batches(p.langs, p.groups, dc.batch_size, self.cfg.runtime.seed, epoch, dc.balance_languages,
                             dc.unique_groups, dc.language_weights)

    def source(self, epoch: int, batches: list[list[int]]):
        """(pixels or None, this rank's row indices, every rank's row count) per global batch; no pixels at
        all when image features are cached. Each rank reads only its slice (:func:`rank_batches`)."""
        import torch

        d, dc, seed = self.dist, self.cfg.data, self.cfg.runtime.seed
        sizes = [[b - a for a, b in shard_bounds(len(batch), d.world_size)] for batch in batches]
        mine = rank_batches(batches, d) if d.active else batches
        if ("train", "image") in self.feats:
            return ((None, torch.tensor(b), n) for b, n in zip(mine, sizes))
        loader = batch_source(self.pairs["train"], self.stores["train"], mine, seed=seed, epoch=epoch,
                              augment=dc.augment, loader=dc.loader, num_workers=dc.num_workers, device=self.device)
        return ((item[0], item[1], n) for item, n in zip(loader, sizes))

    def loss(self, inputs):
        """The global batch's contrastive loss (through DDP when there are several ranks)."""
        pixels, idx, sizes = inputs
        return (self.ddp or self.step)(pixels, idx, sizes)

    def _embed(self, pixels, idx):
        """Projected embeddings of this rank's rows (call under autocast)."""
        import torch

        m, dev, pairs = self.model, self.device, self.pairs["train"]
        if ("train", "image") in self.feats:
            img_f = self._cached("image", torch.from_numpy(pairs.image_index[idx.numpy()]))
        else:
            pixels = to_model_input(pixels, self.stores["train"].spec, dev, self.cfg.runtime.channels_last)
            with torch.no_grad() if self.img_frozen else contextlib.nullcontext():
                img_f = self.image_fn(pixels)
        if ("train", "text") in self.feats:
            txt_f = self._cached("text", idx)
        else:
            ids, mask = self.tokenizer([pairs.texts[i] for i in idx.tolist()])
            if self.cfg.runtime.compile:  # a new caption length would be a new compiled graph
                ids, mask = pad_to_bucket(ids, mask, self.tokenizer.pad_id)
            with torch.no_grad() if self.txt_frozen else contextlib.nullcontext():
                txt_f = self.text_fn(ids.to(dev), mask.to(dev))
        return m.project_image(img_f), m.project_text(txt_f)

    def _cached(self, side: str, rows):
        """Rows of a cached feature table. On CUDA the table moves to the device once (24k captions x 384
        fp32 is 37 MB): a per-step host gather + copy would cap head-only epochs at the PCIe round trip."""
        import torch

        key = ("train", side)
        if self.device.type == "cuda":
            if key not in self._feats_dev:
                self._feats_dev[key] = torch.from_numpy(np.asarray(self.feats[key])).to(self.device)
            return self._feats_dev[key][rows.to(self.device, non_blocking=True)]
        return torch.from_numpy(np.asarray(self.feats[key][rows.numpy()]))

    def evaluate(self) -> dict | None:
        if "val" not in self.pairs:
            return None
        dc, f = self.cfg.data, self.feats
        args = (self.model, self.tokenizer, dc.batch_size, self.device, self.autocast)
        img, txt = embed_pairs(self.model, self.pairs["val"], self.stores["val"], *args[1:], f.get(("val", "image")),
                               f.get(("val", "text")), self.cfg.runtime.channels_last)
        return evaluate_embeddings(self.pairs["val"], img, txt, text_encoder(*args), self.label_names)

    def trainable_tensors(self) -> dict:
        from lugha.training.adapters import trainable_state_dict

        return trainable_state_dict(self.model)

    def load_trainable(self, tensors: dict) -> None:
        from lugha.training.adapters import load_trainable_state_dict

        load_trainable_state_dict(self.model, tensors)

    def meta(self) -> dict:
        return {}
