"""The one training loop: a typed position, a task that supplies batches and losses, and everything else
(seeding, optimizer, schedule, validation, best and patience, checkpoints, exact resume) written once.

A task (:class:`Task`) is what differs between jobs: the retrieval dual encoder
(:class:`lugha.training.retrieval.RetrievalTask`) and the classify fusion head
(:class:`lugha.training.classify.ClassifyTask`). It says which rows make up an epoch's batches, turns a batch
into a loss, evaluates, and names its trainable tensors. :class:`Loop` owns the rest, so a change to resume
or early stopping reaches every task at once.

Resume is exact, mid-epoch included: an epoch's batches are a pure function of (seed, epoch), the checkpoint
stores the :class:`Position` with the model, optimizer, scheduler, scaler and RNG states, and no loader
draws from the global RNG. On CPU with a fixed seed, stop + ``--resume`` gives bitwise the weights and losses
of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from lugha.errors import ConfigError

from lugha.training import checkpoint as ckpt
from lugha.training.distributed import Dist
from lugha.training.optim import make_optimizer, make_scheduler
from lugha.training.run_log import NullLog, RunLog


@dataclass
class Position:
    """Where a run stands; saved in every ``last`` checkpoint. ``batch`` counts the current epoch's batches
    already trained (micro-batches, with gradient accumulation); ``losses`` are that epoch's losses so far,
    so a resumed epoch reports the same mean loss; ``bad_evals`` counts evaluations since the best."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    bad_evals: int = 0
    done: bool = False
    stopped: str = "done"  # "done", "early_stop", "max_steps" (how a finished run ended)
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, steps_per_epoch: int) -> "Position":
        """A saved position; one from a classify run older than the one loop (step, best, bad_evals and
        losses only) gets its epoch and batch back from the step count."""
        d = dict(d)
        if "epoch" not in d:
            d["epoch"], d["batch"] = divmod(int(d["step"]), steps_per_epoch)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    best: float | None
    stopped: str  # "done", "early_stop", "max_steps", "interrupted"
    epoch_seconds: list[float] = field(default_factory=list)
    last_eval: dict | None = None


class Task(Protocol):
    """What a job plugs into :class:`Loop`.

    ``model``: the module whose parameters train (its trainable ones are optimized, clipped and saved);
    ``frozen``: sub-modules put back in eval mode each epoch; ``device``: where the step runs;
    ``optim_device``: where the optimizer state lives; ``use_scaler``: fp16 loss scaling; ``model_cfg``;
    ``digest``: the frozen weights' digest, checked on resume."""

    model: Any
    frozen: list
    device: Any
    optim_device: Any
    use_scaler: bool
    model_cfg: Any
    digest: str

    def batches(self, epoch: int) -> list:
        """The epoch's batches of row indices (global: every rank sees the same list)."""

    def source(self, epoch: int, batches: list) -> Iterable:
        """One input per batch of ``batches`` (this rank's share of each), in order."""

    def loss(self, inputs) -> Any:
        """The batch's loss (a scalar tensor) from one item of :meth:`source`."""

    def evaluate(self) -> dict | None:
        """A report with a ``mean`` dict of metrics, or None when the run has no validation split."""

    def trainable_tensors(self) -> dict:
        """name -> tensor of everything that trains (what a checkpoint stores)."""

    def load_trainable(self, tensors: dict) -> None:
        """Put :meth:`trainable_tensors`' output back."""

    def meta(self) -> dict:
        """Extra fields for a checkpoint's ``meta.json``."""

    def start_fresh(self) -> None:
        """Set-up only a new run does (``init_from``, a head's data-dependent init)."""


def seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _above_bars(say: Callable[[str], None]) -> Callable[[str], None]:
    """Status lines printed above a live progress bar instead of through it."""
    def wrapped(msg: str) -> None:
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():
            say(msg)

    return wrapped


class Loop:
    """One run of one task: set up once (optimizer, schedule, scaler, position, log), then :meth:`fit`.
    Under torchrun every rank runs the same loop in lockstep; only rank 0 writes the log and checkpoints."""

    def __init__(self, task: Task, cfg, run_dir: Path, resume: bool, show_progress: bool,
                 say: Callable[[str], None], dist: Dist | None = None):
        import torch

        self.task, self.cfg, self.run_dir, self.dist = task, cfg, run_dir, dist or Dist()
        self.main = self.dist.rank == 0
        self.show_progress = show_progress and self.main
        self.say = _above_bars(say) if self.main else (lambda msg: None)
        if not resume and self.main:
            ckpt.write_configs(run_dir, cfg, task.model_cfg)
        self.steps_per_epoch = len(self.batches_of(0)) // cfg.optim.grad_accum
        if self.steps_per_epoch == 0:
            raise ConfigError("data.batch_size", f"{cfg.data.batch_size} x optim.grad_accum {cfg.optim.grad_accum} "
                                                 f"is more than the training rows ({len(task.batches(0))} batches)")
        self.total = min(cfg.loop.max_steps or 1 << 62, cfg.loop.epochs * self.steps_per_epoch)
        self.optimizer = make_optimizer(task.model, cfg.optim, task.optim_device)
        self.sched = make_scheduler(self.optimizer, cfg.optim, self.total)
        self.scaler = torch.amp.GradScaler(task.device.type, enabled=task.use_scaler)
        self.pos = Position()
        if resume:
            self._restore()
        else:
            task.start_fresh()
            torch.manual_seed(cfg.runtime.seed)  # whatever the set-up drew, step 0 starts from the same RNG state
        self.log = RunLog(run_dir, self.pos.step if resume else None, say) if self.main else NullLog()
        self.last_eval: dict | None = None
        self._pending: list = []  # this epoch's losses not yet copied to the host

    def batches_of(self, epoch: int) -> list:
        b = self.task.batches(epoch)
        return b[: len(b) - len(b) % self.cfg.optim.grad_accum]  # whole optimizer steps only

    def _restore(self) -> None:
        folder = ckpt.find_checkpoint(self.run_dir, "last")
        trainable, meta, state = ckpt.load_checkpoint(folder)
        ckpt.check_frozen_digest(meta, self.task.digest, folder)
        self.task.load_trainable(trainable)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if "scaler" in state:  # classify checkpoints before the one loop had no scaler (it was always off)
            self.scaler.load_state_dict(state["scaler"])
        self.pos = Position.from_dict(state["position"], self.steps_per_epoch)
        ranks = state.get("rng_ranks") or []  # the same world size resumes each rank's stream, another rank 0's
        ckpt.set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state["rng"])
        p = self.pos
        self.say(f"resuming {self.run_dir} at epoch {p.epoch}, batch {p.batch}, step {p.step}")

    def _optimizer_step(self) -> None:
        import torch

        clip = self.cfg.optim.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.task.model.parameters() if p.requires_grad], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.sched.step()

    def validate(self) -> bool:
        """Validate, log, track best and patience; True when the next checkpoint should become best."""
        # rank 0 evaluates and the others take its report: best and patience cannot drift apart
        report = self.dist.broadcast(self.task.evaluate() if self.main else None)
        if report is None:
            return True
        key, pos = self.cfg.loop.keep_best, self.pos
        if key not in report["mean"]:
            raise ConfigError("loop.keep_best", f"{key!r} is not a metric; known: {sorted(report['mean'])}")
        self.last_eval, score = report, report["mean"][key]
        self.log.write({"kind": "eval", "step": pos.step, "epoch": pos.epoch, **report["mean"]})
        better = pos.best is None or score > pos.best
        pos.best, pos.bad_evals = (score, 0) if better else (pos.best, pos.bad_evals + 1)
        self.say(f"step {pos.step}: val {key} {score:.4f}" + (" (best)" if better else ""))
        return better

    def _flush_losses(self) -> None:
        """Losses still on the device -> floats in the position (one sync for many steps)."""
        if self._pending:
            import torch

            self.pos.losses.extend(torch.stack(self._pending).float().cpu().tolist())
            self._pending.clear()

    def save(self, best_too: bool) -> None:
        """``last`` (and ``best``): written by rank 0 only; every rank holds the same weights."""
        self._flush_losses()  # the checkpoint's position carries the epoch's losses so far
        # each rank's RNG: dropout draws differ per rank (other rows, other lengths), and an exact resume
        # gives each its own stream back
        rngs = self.dist.gather(ckpt.rng_state())
        if not self.main:
            return
        pos, task = self.pos, self.task
        meta = {"step": pos.step, "epoch": pos.epoch, "frozen_digest": task.digest,
                "metrics": self.last_eval["mean"] if self.last_eval else None, **task.meta()}
        tensors = task.trainable_tensors()
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": rngs[0], "position": pos.to_dict()}
        if self.dist.active:
            state["rng_ranks"] = rngs
        ckpt.save_checkpoint(self.run_dir / "last", tensors, self.cfg, task.model_cfg, meta, state)
        if best_too:
            ckpt.save_checkpoint(self.run_dir / "best", tensors, self.cfg, task.model_cfg, meta)

    def _should_stop(self) -> str | None:
        lp, pos = self.cfg.loop, self.pos
        if lp.max_steps is not None and pos.step >= lp.max_steps:
            return "max_steps"
        if lp.patience and pos.bad_evals >= lp.patience:
            return "early_stop"
        return None

    def _log_step(self, epoch: int, bar) -> None:
        accum, pos = self.cfg.optim.grad_accum, self.pos
        self._flush_losses()
        step_loss, lr = float(np.mean(pos.losses[-accum:])), self.sched.get_last_lr()[0]
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        self.log.write({"kind": "train", "step": pos.step, "epoch": epoch, "loss": step_loss, "lr": lr})

    def _end_epoch(self, epoch: int, seconds: float) -> bool:
        """Validate, log the epoch, move the position on, checkpoint; True when the run is over."""
        pos = self.pos
        best_now = self.validate()
        self._flush_losses()
        mean_loss = float(np.mean(pos.losses)) if pos.losses else float("nan")
        self.log.write({"kind": "epoch", "step": pos.step, "epoch": epoch, "seconds": seconds, "loss": mean_loss})
        self.say(f"epoch {epoch + 1}/{self.cfg.loop.epochs}: loss {mean_loss:.4f}, {seconds:.1f}s")
        pos.epoch, pos.batch, pos.losses = epoch + 1, 0, []
        reason = self._should_stop()
        if reason or pos.epoch >= self.cfg.loop.epochs:
            pos.done, pos.stopped = True, reason or "done"
        self.save(best_now)
        return pos.done

    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train to the end (or ``stop_after_steps``, checkpointed, as if killed there)."""
        from tqdm.auto import tqdm

        lp, pos, accum, task = self.cfg.loop, self.pos, self.cfg.optim.grad_accum, self.task
        seconds: list[float] = []
        interrupted = lambda: stop_after_steps is not None and pos.step >= stop_after_steps  # noqa: E731
        while not pos.done and pos.epoch < lp.epochs:
            epoch, start, t0 = pos.epoch, pos.batch, time.perf_counter()
            batches = self.batches_of(epoch)
            task.model.train()
            for m in task.frozen:
                m.eval()
            bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{lp.epochs}", unit="batch",
                       disable=not self.show_progress, leave=False)
            evaluated = best_now = False
            for b, inputs in enumerate(task.source(epoch, batches[start:]), start):
                last_micro = (b + 1) % accum == 0
                with self.dist.no_sync(task, skip=not last_micro):  # one all-reduce per optimizer step
                    loss = task.loss(inputs)
                    self.scaler.scale(loss / accum).backward()
                # a detached tensor, not loss.item(): .item() every step would stall the GPU queue on CUDA
                self._pending.append(loss.detach())
                bar.update(1)
                if not last_micro:
                    continue
                self._optimizer_step()
                pos.step, pos.batch = pos.step + 1, b + 1
                if pos.step % lp.log_every == 0 or pos.step == 1:
                    self._log_step(epoch, bar)
                if b + 1 == len(batches):
                    break  # the epoch-end block validates and checkpoints
                evaluated = bool(lp.eval_every) and pos.step % lp.eval_every == 0
                best_now = self.validate() if evaluated else False
                if reason := self._should_stop():
                    pos.done, pos.stopped = True, reason
                    break
                if best_now or interrupted() or (lp.checkpoint_every and pos.step % lp.checkpoint_every == 0):
                    self.save(best_now)
                if interrupted():
                    bar.close()
                    return self._result("interrupted", seconds)
            bar.close()
            if pos.done:  # stopped mid-epoch by max_steps or patience
                self.save(best_now if evaluated else self.validate())
                break
            seconds.append(time.perf_counter() - t0)
            if self._end_epoch(epoch, seconds[-1]):
                break
            if interrupted():
                return self._result("interrupted", seconds)
        return self._result(pos.stopped, seconds)  # a finished run resumed reports how it ended

    def _result(self, stopped: str, seconds: list[float]) -> TrainResult:
        self.log.close()
        p = self.pos
        return TrainResult(self.run_dir, p.step, p.epoch, p.best, stopped, seconds, self.last_eval)
