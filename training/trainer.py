"""The training loop: seeded, resumable, and at head speed when the towers are frozen.

``train(cfg, run_dir)`` writes into ``run_dir``: ``config.yaml`` (resolved), ``model_config.json``,
``metrics.jsonl`` (one JSON row per log/eval/epoch), TensorBoard events when ``tensorboard`` is
installed, ``last/`` (every epoch, and every ``loop.checkpoint_every`` steps) and ``best/`` (by
``loop.keep_best`` on the validation split).

Resume is exact, mid-epoch included: an epoch's batches are a pure function of (seed, epoch)
(:func:`lugha.training.data.epoch_batches`), the checkpoint stores the batch position with the model,
optimizer, scheduler, scaler and RNG states, and no DataLoader draws from the global RNG. On CPU with a
fixed seed, stop + ``--resume`` gives bitwise the weights and losses of an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.errors import ConfigError

from lugha.training import checkpoint as ckpt
from lugha.training.data import (ImageStore, PairSet, PixelDataset, epoch_batches, hflip_mask, make_loader, pad_to_bucket,
                   to_model_input)
from lugha.training.evaluate import embed_pairs, evaluate_embeddings, load_label_names, text_encoder
from lugha.training.feature_cache import (FeatureCache, compute_image_features, compute_text_features, frozen_weights_digest,
                            image_inputs_key, text_inputs_key)
from lugha.training.optim import autocast_for, make_optimizer, make_scheduler, pick_device, torch_threads
from lugha.training.run_log import RunLog
from lugha.training.train_config import TrainConfig, diff_configs, load_train_config, resolve_paths


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    best: float | None
    stopped: str  # "done", "early_stop", "max_steps", "interrupted"
    epoch_seconds: list[float] = field(default_factory=list)
    last_eval: dict | None = None


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


def _above_bars(say: Callable[[str], None]) -> Callable[[str], None]:
    """Status lines printed above a live progress bar instead of through it."""
    def wrapped(msg: str) -> None:
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():
            say(msg)

    return wrapped


def prepare_run(cfg: TrainConfig | None, run_dir: Path, resume: bool) -> TrainConfig:
    """The config this run trains with: the given one (fresh run), or the saved one (resume)."""
    saved = run_dir / ckpt.TRAIN_CONFIG
    cfg = resolve_paths(cfg) if cfg is not None else None
    if resume:
        if not saved.is_file():
            raise ckpt.CheckpointError(f"{run_dir}: nothing to resume (no {ckpt.TRAIN_CONFIG})")
        old = load_train_config(saved)
        if cfg is not None and (changed := diff_configs(old, cfg)):
            raise ConfigError(changed[0], f"differs from the run being resumed ({run_dir}); changed: {changed}")
        return old
    if cfg is None:
        raise ConfigError("config", "a config is needed to start a run")
    if (run_dir / "last").exists() or (run_dir / ".last.old").exists():
        raise ConfigError("--out", f"{run_dir} already holds a run; pass --resume or another --out")
    if not cfg.data.manifest:
        raise ConfigError("data.manifest", "required (path of a JSONL manifest)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


class Trainer:
    """One run: set up once (:meth:`__init__`), then :meth:`fit`. Frozen towers' features come from the
    feature cache when ``runtime.feature_cache`` is on; everything else runs live each step."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, show_progress: bool, say: Callable):
        import torch

        self.cfg, self.run_dir, self.show_progress = cfg, run_dir, show_progress
        self.say = _above_bars(say)
        rt, dc = cfg.runtime, cfg.data
        random.seed(rt.seed)
        np.random.seed(rt.seed)
        torch.manual_seed(rt.seed)
        if rt.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.device = pick_device(rt.device)
        self.autocast, use_scaler, precision = autocast_for(self.device, rt.precision)
        self.model_cfg = cfg.model_config()
        self.model, self.tokenizer = ckpt.build_for_training(cfg, self.model_cfg)
        self.model.to(self.device)
        if rt.channels_last:
            self.model.set_channels_last(True)
        self.digest = frozen_weights_digest(self.model)
        if not resume:
            ckpt.write_configs(run_dir, cfg, self.model_cfg)
        from lugha.training.adapters import count_parameters

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
        for store in self.stores.values():
            store.build(dc.num_workers, show_progress)
        self.img_frozen, self.txt_frozen = bool(self.model.image_tower_frozen), bool(self.model.text_tower_frozen)
        self.feats = self._cache_features(precision) if rt.feature_cache else {}
        self._feats_dev: dict = {}
        self._pending: list = []  # this epoch's losses not yet copied to the host
        self.frozen = frozen_modules(self.model)
        self.image_fn = torch.compile(self.model.image_features) if rt.compile else self.model.image_features
        self.text_fn = torch.compile(self.model.text_features) if rt.compile else self.model.text_features

        self.steps_per_epoch = len(self.batches_of(0)) // cfg.optim.grad_accum
        if self.steps_per_epoch == 0:
            raise ConfigError("data.batch_size", f"{dc.batch_size} x optim.grad_accum {cfg.optim.grad_accum} is "
                              f"more than the {len(self.pairs['train'])} training rows")
        total = min(cfg.loop.max_steps or 1 << 62, cfg.loop.epochs * self.steps_per_epoch)
        if cfg.init_from and not resume:
            self.say(ckpt.init_trainable_from(self.model, cfg.init_from, self.model_cfg))
        self.optimizer = make_optimizer(self.model, cfg.optim, self.device)
        self.sched = make_scheduler(self.optimizer, cfg.optim, total)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        # the epoch's losses so far travel with the position: a resumed epoch reports the same mean loss
        self.pos = {"epoch": 0, "batch": 0, "step": 0, "best": None, "bad_evals": 0, "done": False, "losses": [],
                    "stopped": "done"}
        if resume:
            self._restore()
        else:
            torch.manual_seed(rt.seed)  # whatever the set-up drew, step 0 starts from the same RNG state
        self.log = RunLog(run_dir, self.pos["step"] if resume else None, say)
        self.label_names = load_label_names(dc.manifest)[0]
        self.last_eval: dict | None = None

    def _cache_features(self, precision: str) -> dict[tuple[str, str], np.ndarray]:
        m, dc, rt = self.model, self.cfg.data, self.cfg.runtime
        if not (self.img_frozen or self.txt_frozen):
            return {}
        fc, feats = FeatureCache(self.digest, self.model_cfg.to_dict(), precision, dc.cache_dir), {}
        for name, pairs in self.pairs.items():
            if self.img_frozen:
                feats[name, "image"] = fc.get_or_build("image", image_inputs_key(self.stores[name]),
                                                       len(pairs.image_paths), lambda n=name: (
                    compute_image_features(m, self.stores[n], dc.batch_size, self.device, self.autocast,
                                           dc.num_workers, rt.channels_last)), f"image features ({name})",
                    self.show_progress)
            if self.txt_frozen:
                feats[name, "text"] = fc.get_or_build("text", text_inputs_key(pairs.texts), len(pairs), lambda p=pairs: (
                    compute_text_features(m, self.tokenizer, p.texts, dc.batch_size, self.device, self.autocast)),
                    f"text features ({name})", self.show_progress)
        if self.img_frozen and dc.augment != "none":
            self.say(f"data.augment={dc.augment} is not applied: the frozen image tower's features are cached")
        return feats

    def _restore(self) -> None:
        from lugha.training.adapters import load_trainable_state_dict

        folder = ckpt.find_checkpoint(self.run_dir, "last")
        trainable, meta, state = ckpt.load_checkpoint(folder)
        ckpt.check_frozen_digest(meta, self.digest, folder)
        load_trainable_state_dict(self.model, trainable)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.pos.update(state["position"])
        ckpt.set_rng_state(state["rng"])
        p = self.pos
        self.say(f"resuming {self.run_dir} at epoch {p['epoch']}, batch {p['batch']}, step {p['step']}")

    def batches_of(self, epoch: int) -> list[list[int]]:
        dc, p = self.cfg.data, self.pairs["train"]
        b = epoch_batches(p.langs, p.groups, dc.batch_size, self.cfg.runtime.seed, epoch, dc.balance_languages,
                          dc.unique_groups, dc.language_weights)
        return b[: len(b) - len(b) % self.cfg.optim.grad_accum]  # whole optimizer steps only

    def _source(self, epoch: int, batches: list[list[int]]):
        """(pixels or None, row indices) per batch; no pixels at all when image features are cached."""
        import torch

        if ("train", "image") in self.feats:
            return ((None, torch.tensor(b)) for b in batches)
        dc, seed = self.cfg.data, self.cfg.runtime.seed
        flip = hflip_mask(seed, epoch, len(self.pairs["train"])) if dc.augment == "hflip" else None
        return make_loader(PixelDataset(self.pairs["train"], self.stores["train"], flip), batches, dc.num_workers,
                           seed=seed * 1_000_003 + epoch, pin_memory=self.device.type == "cuda")

    def _loss(self, pixels, idx):
        import torch

        m, dev, pairs = self.model, self.device, self.pairs["train"]
        with self.autocast():
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
            return m.loss(m.project_image(img_f), m.project_text(txt_f))

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

    def _optimizer_step(self) -> None:
        import torch

        clip = self.cfg.optim.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.sched.step()

    def validate(self) -> bool:
        """Validate, log, track best and patience; True when the next checkpoint should become best."""
        if "val" not in self.pairs:
            return True
        dc, lp, f = self.cfg.data, self.cfg.loop, self.feats
        args = (self.model, self.tokenizer, dc.batch_size, self.device, self.autocast)
        img, txt = embed_pairs(self.model, self.pairs["val"], self.stores["val"], *args[1:], f.get(("val", "image")),
                               f.get(("val", "text")), self.cfg.runtime.channels_last)
        report = evaluate_embeddings(self.pairs["val"], img, txt, text_encoder(*args), self.label_names)
        if lp.keep_best not in report["mean"]:
            raise ConfigError("loop.keep_best", f"{lp.keep_best!r} is not a metric; known: {sorted(report['mean'])}")
        self.last_eval, score, pos = report, report["mean"][lp.keep_best], self.pos
        self.log.write({"kind": "eval", "step": pos["step"], "epoch": pos["epoch"], **report["mean"]})
        better = pos["best"] is None or score > pos["best"]
        pos["best"], pos["bad_evals"] = (score, 0) if better else (pos["best"], pos["bad_evals"] + 1)
        self.say(f"step {pos['step']}: val {lp.keep_best} {score:.4f}" + (" (best)" if better else ""))
        return better

    def _flush_losses(self) -> None:
        """Losses still on the device -> floats in the position (one sync for many steps)."""
        if self._pending:
            import torch

            self.pos["losses"].extend(torch.stack(self._pending).float().cpu().tolist())
            self._pending.clear()

    def save(self, best_too: bool) -> None:
        from lugha.training.adapters import trainable_state_dict

        self._flush_losses()  # the checkpoint's position carries the epoch's losses so far

        meta = {"step": self.pos["step"], "epoch": self.pos["epoch"], "frozen_digest": self.digest,
                "metrics": self.last_eval["mean"] if self.last_eval else None}
        tensors = trainable_state_dict(self.model)
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "position": dict(self.pos)}
        ckpt.save_checkpoint(self.run_dir / "last", tensors, self.cfg, self.model_cfg, meta, state)
        if best_too:
            ckpt.save_checkpoint(self.run_dir / "best", tensors, self.cfg, self.model_cfg, meta)

    def _should_stop(self) -> str | None:
        lp, pos = self.cfg.loop, self.pos
        if lp.max_steps is not None and pos["step"] >= lp.max_steps:
            return "max_steps"
        if lp.patience and pos["bad_evals"] >= lp.patience:
            return "early_stop"
        return None

    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train to the end (or ``stop_after_steps``, checkpointed, as if killed there)."""
        from tqdm.auto import tqdm

        lp, pos, accum = self.cfg.loop, self.pos, self.cfg.optim.grad_accum
        seconds: list[float] = []
        interrupted = lambda: stop_after_steps is not None and pos["step"] >= stop_after_steps  # noqa: E731
        while not pos["done"] and pos["epoch"] < lp.epochs:
            epoch, start, t0 = pos["epoch"], pos["batch"], time.perf_counter()
            batches = self.batches_of(epoch)
            self.model.train()
            for m in self.frozen:
                m.eval()
            bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{lp.epochs}", unit="batch",
                       disable=not self.show_progress, leave=False)
            for b, (pixels, idx) in enumerate(self._source(epoch, batches[start:]), start):
                loss = self._loss(pixels, idx)
                self.scaler.scale(loss / accum).backward()
                # a detached tensor, not loss.item(): .item() every step would stall the GPU queue on CUDA
                self._pending.append(loss.detach())
                bar.update(1)
                if (b + 1) % accum:
                    continue
                self._optimizer_step()
                pos["step"], pos["batch"] = pos["step"] + 1, b + 1
                if pos["step"] % lp.log_every == 0 or pos["step"] == 1:
                    self._flush_losses()
                    step_loss, lr = float(np.mean(pos["losses"][-accum:])), self.sched.get_last_lr()[0]
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                    self.log.write({"kind": "train", "step": pos["step"], "epoch": epoch, "loss": step_loss, "lr": lr})
                if b + 1 == len(batches):
                    break  # the epoch-end block validates and checkpoints
                evaluated = bool(lp.eval_every) and pos["step"] % lp.eval_every == 0
                best_now = self.validate() if evaluated else False
                if reason := self._should_stop():
                    pos["done"], pos["stopped"] = True, reason
                    break
                if best_now or interrupted() or (lp.checkpoint_every and pos["step"] % lp.checkpoint_every == 0):
                    self.save(best_now)
                if interrupted():
                    bar.close()
                    return self._result("interrupted", seconds)
            bar.close()
            if pos["done"]:  # stopped mid-epoch by max_steps or patience
                self.save(best_now if evaluated else self.validate())
                break
            seconds.append(time.perf_counter() - t0)
            best_now = self.validate()
            self._flush_losses()
            mean_loss = float(np.mean(pos["losses"])) if pos["losses"] else float("nan")
            self.log.write({"kind": "epoch", "step": pos["step"], "epoch": epoch, "seconds": seconds[-1],
                            "loss": mean_loss})
            self.say(f"epoch {epoch + 1}/{lp.epochs}: loss {mean_loss:.4f}, {seconds[-1]:.1f}s")
            pos["epoch"], pos["batch"], pos["losses"] = epoch + 1, 0, []
            reason = self._should_stop()
            if reason or pos["epoch"] >= lp.epochs:
                pos["done"], pos["stopped"] = True, reason or "done"
            self.save(best_now)
            if interrupted() and not pos["done"]:
                return self._result("interrupted", seconds)
        return self._result(pos["stopped"], seconds)  # a finished run resumed reports how it ended

    def _result(self, stopped: str, seconds: list[float]) -> TrainResult:
        self.log.close()
        p = self.pos
        return TrainResult(self.run_dir, p["step"], p["epoch"], p["best"], stopped, seconds, self.last_eval)


def train(cfg: TrainConfig | None, run_dir, resume: bool = False, stop_after_steps: int | None = None,
          show_progress: bool = True, say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) a run. ``stop_after_steps`` checkpoints and returns after that many optimizer
    steps without changing the schedule (tests use it to interrupt a run the way a kill would)."""
    run_dir = Path(run_dir)
    cfg = prepare_run(cfg, run_dir, resume)
    with torch_threads(cfg.runtime.threads):
        if cfg.task == "classify":  # a fusion head on the frozen towers: lugha.training.classify
            from lugha.training.classify import train_classify

            return train_classify(cfg, run_dir, resume, stop_after_steps, show_progress, say)
        return Trainer(cfg, run_dir, resume, show_progress, say).fit(stop_after_steps)
