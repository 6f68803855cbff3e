"""``train(cfg, run_dir)``: prepare the run folder, pick the task, run the one loop.

``run_dir`` gets ``config.yaml`` (resolved), ``model_config.json``, ``metrics.jsonl`` (one JSON row per
log/eval/epoch), TensorBoard events when ``tensorboard`` is installed, ``last/`` (every epoch, and every
``loop.checkpoint_every`` steps) and ``best/`` (by ``loop.keep_best`` on the validation split).

The loop itself (position, optimizer, validation, best and patience, checkpoints, exact resume) is
:mod:`lugha.training.loop`; what a job trains is a task: :class:`~lugha.training.retrieval.RetrievalTask`
(the contrastive dual encoder) or :class:`~lugha.training.classify.ClassifyTask` (a fusion head).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lugha.errors import ConfigError

from lugha.training import checkpoint as ckpt
from lugha.training import distributed
from lugha.training.distributed import Dist
from lugha.training.loop import Loop, TrainResult, seed_everything
from lugha.training.optim import torch_threads
from lugha.training.train_config import TrainConfig, diff_configs, load_train_config, resolve_paths

__all__ = ["train", "prepare_run", "TrainResult"]


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
    if (run_dir / "last").exists() or any(run_dir.glob(".last.old*")):
        raise ConfigError("--out", f"{run_dir} already holds a run; pass --resume or another --out")
    if not cfg.data.manifest:
        raise ConfigError("data.manifest", "required (path of a JSONL manifest)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def make_task(cfg: TrainConfig, run_dir: Path, resume: bool, show_progress: bool, say: Callable[[str], None],
              dist: Dist, device):
    """The task ``cfg.task`` names, set up (model built, data and feature caches ready)."""
    if cfg.task == "classify":  # a fusion head on the frozen towers
        from lugha.training.classify import ClassifyTask

        if dist.active:
            raise ConfigError("task", "classify trains a small head at head speed on one CPU process; "
                                      "run it without --nproc-per-node")
        return ClassifyTask(cfg, run_dir, resume, show_progress, say)
    from lugha.training.retrieval import RetrievalTask

    return RetrievalTask(cfg, run_dir, resume, show_progress, say, dist, device)


def train(cfg: TrainConfig | None, run_dir, resume: bool = False, stop_after_steps: int | None = None,
          show_progress: bool = True, say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) a run. ``stop_after_steps`` checkpoints and returns after that many optimizer
    steps without changing the schedule (tests use it to interrupt a run the way a kill would). Started by
    torchrun, each worker joins the process group and trains its share (:mod:`lugha.training.distributed`)."""
    run_dir = Path(run_dir)
    cfg = prepare_run(cfg, run_dir, resume)
    with torch_threads(cfg.runtime.threads):
        dist, device = distributed.init(cfg.runtime.device)
        try:
            seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)
            main = dist.rank == 0
            task = make_task(cfg, run_dir, resume, show_progress and main, say if main else _silent, dist, device)
            return Loop(task, cfg, run_dir, resume, show_progress, say, dist).fit(stop_after_steps)
        finally:
            distributed.close(dist)


def _silent(msg: str) -> None:
    """Status lines of ranks other than 0 (rank 0 speaks for the job)."""
