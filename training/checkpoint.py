"""Run checkpoints: small (only the tensors that train), complete (everything a resume needs) and atomic.

A checkpoint folder (``RUN/last``, ``RUN/best``) holds:

* ``trainable.safetensors`` - the trainable tensors only (LoRA / heads: megabytes, not the towers);
* ``model_config.json`` + ``config.yaml`` - what to rebuild the frozen part from;
* ``state.pt`` (``last`` only) - optimizer, scheduler, grad scaler, RNG states (every rank's, under torchrun)
  and the data position (:class:`lugha.training.loop.Position`: epoch, batch within it, step, best, patience),
  so ``--resume`` replays the exact batches and dropout masks;
* ``meta.json`` - step, epoch, metrics, and a digest of the frozen weights: loading a checkpoint onto a
  model whose frozen weights differ from training (another pretrained file, another init seed) is an error.

Writing goes to a temp folder (``.last.tmp-<pid>-*``: unique, its files and entries fsync-ed) that is renamed
into place by :func:`lugha.atomic.replace_dir`; the previous folder is renamed aside first
(``.last.old-<pid>-*``) and removed after, and a reader falls back to it, so a kill at any moment leaves
one complete checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lugha.atomic import fsync_dir, pid_alive, replace_dir
from lugha.config import ModelConfig
from lugha.errors import ConfigError, LughaError

from lugha.training.train_config import TrainConfig, dump_yaml, load_train_config


class CheckpointError(LughaError):
    """A run folder or checkpoint that cannot be used (missing, incomplete, other frozen weights)."""


WEIGHTS, STATE, META, MODEL_CONFIG, TRAIN_CONFIG = (
    "trainable.safetensors", "state.pt", "meta.json", "model_config.json", "config.yaml")


def rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def write_configs(folder: Path, train_cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    (folder / TRAIN_CONFIG).write_text(dump_yaml(train_cfg), encoding="utf-8")
    (folder / MODEL_CONFIG).write_text(json.dumps(model_cfg.to_dict(), indent=2) + "\n", encoding="utf-8")


def save_checkpoint(dest: str | os.PathLike, trainable: dict, train_cfg: TrainConfig, model_cfg: ModelConfig,
                    meta: dict, state: dict | None = None) -> Path:
    """Write one checkpoint folder atomically. ``trainable``: name -> tensor; ``state``: the resume state."""
    dest = Path(dest)
    _sweep_temps(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        _write_folder(tmp, trainable, train_cfg, model_cfg, meta, state)
        replace_dir(tmp, dest)  # renames, then fsyncs the run folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest.with_name(f".{dest.name}.old"), ignore_errors=True)  # the fixed name older lugha used
    return dest


def _write_folder(tmp: Path, trainable: dict, train_cfg: TrainConfig, model_cfg: ModelConfig, meta: dict,
                  state: dict | None) -> None:
    import torch
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage (tied or sliced parameters)
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in trainable.items()}, str(tmp / WEIGHTS))
    if state is not None:
        torch.save(state, tmp / STATE)
    write_configs(tmp, train_cfg, model_cfg)
    (tmp / META).write_text(json.dumps(meta, indent=2, default=float) + "\n", encoding="utf-8")
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)  # and the files' entries in the folder


def _sweep_temps(dest: Path) -> None:
    """Temp folders a killed save left (``.last.tmp``, ``.last.tmp-<pid>-*``): removed unless another
    living process is writing one."""
    for d in dest.parent.glob(f".{dest.name}.tmp*"):
        pid = d.name[len(f".{dest.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed since the listing
        return 0.0


def find_checkpoint(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """``RUN/<which>``, or the previous copy a kill during the swap left aside."""
    run_dir = Path(run_dir)
    asides = sorted(run_dir.glob(f".{which}.old*"), key=_mtime, reverse=True)  # the newest aside first
    for cand in (run_dir / which, *asides):
        if (cand / META).is_file() and (cand / WEIGHTS).is_file():
            return cand
    if which == "best":
        return find_checkpoint(run_dir, "last")  # a run without validation keeps only `last`
    raise CheckpointError(f"{run_dir}: no complete checkpoint {which!r} (expected {run_dir / which}/{META})")


def load_checkpoint(folder: str | os.PathLike, with_state: bool = True) -> tuple[dict, dict, dict | None]:
    """(trainable tensors, meta, resume state or None)."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    state = None
    if with_state:
        if not (folder / STATE).is_file():
            raise CheckpointError(f"{folder}: no {STATE}; only `last` checkpoints can be resumed")
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    return load_file(str(folder / WEIGHTS)), meta, state


def check_frozen_digest(meta: dict, digest: str, where: Path) -> None:
    if meta.get("frozen_digest") and meta["frozen_digest"] != digest:
        raise CheckpointError(f"{where}: the frozen weights differ from those it was trained on "
                              "(other pretrained files, or another runtime.seed for random-init towers)")


_TOKENIZERS: dict[str, Any] = {}


def build_for_training(train_cfg: TrainConfig, model_cfg: ModelConfig):
    """(model, tokenizer): the towers, adapters applied. The seed is set first so random-init test
    towers (frozen, hence never saved) come out identical when a run is evaluated or resumed."""
    import torch

    from lugha.training.adapters import apply_adapter
    from lugha.training.model import build_model, load_text_tokenizer
    from lugha.training.optim import torch_threads

    key = json.dumps(model_cfg.to_dict(), sort_keys=True)
    if key not in _TOKENIZERS:  # reading a 250k-piece tokenizer.json takes seconds; it is read-only after
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = load_text_tokenizer(model_cfg)
    tokenizer = _TOKENIZERS[key]
    torch.manual_seed(train_cfg.runtime.seed)
    # One thread while building: random-init towers calibrate BatchNorm statistics with forward passes,
    # whose float sums depend on the thread count; the frozen weights must not depend on the machine.
    with torch_threads(1):
        model = build_model(model_cfg, vocab_size=tokenizer_vocab_size(tokenizer), seed=train_cfg.runtime.seed)
    return apply_adapter(model, model_cfg.adapter), tokenizer


def tokenizer_vocab_size(tok) -> int | None:
    for attr in ("vocab_size", "__len__"):
        v = getattr(tok, attr, None)
        if v is not None:
            return int(v() if callable(v) else v)
    inner = getattr(tok, "tokenizer", None)
    return inner.get_vocab_size() if inner is not None and hasattr(inner, "get_vocab_size") else None


def load_run_model(run_dir: str | os.PathLike, which: str = "best"):
    """(model with trained tensors loaded, tokenizer, model config, train config, checkpoint folder)."""
    from lugha.training.adapters import load_trainable_state_dict
    from lugha.training.feature_cache import frozen_weights_digest

    folder = find_checkpoint(run_dir, which)
    train_cfg = load_train_config(folder / TRAIN_CONFIG)
    model_cfg = ModelConfig.from_dict(json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8")))
    model, tokenizer = build_for_training(train_cfg, model_cfg)
    trainable, meta, _ = load_checkpoint(folder, with_state=False)
    check_frozen_digest(meta, frozen_weights_digest(model), folder)
    load_trainable_state_dict(model, trainable)
    model.eval()
    return model, tokenizer, model_cfg, train_cfg, folder


def init_trainable_from(model, run_dir: str | os.PathLike, model_cfg: ModelConfig) -> str:
    """Start ``model``'s trainable tensors from ``run_dir``'s best checkpoint where names and shapes match
    (e.g. a projection-only English baseline's projections under a LoRA run). The towers must be the same
    ones; what is not taken over is named in the returned message, never dropped silently."""
    import torch

    from lugha.training.adapters import trainable_state_dict

    folder = find_checkpoint(run_dir, "best")
    theirs_cfg = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
    mine = model_cfg.to_dict()
    for key in ("image_tower", "text_tower", "embed_dim"):
        if theirs_cfg.get(key) != mine.get(key):
            raise ConfigError("init_from", f"{run_dir}: its {key} differs from this run's; its trained tensors "
                                           "would start a different model")
    theirs, _, _ = load_checkpoint(folder, with_state=False)
    own = trainable_state_dict(model)
    taken = sorted(n for n in own if n in theirs and theirs[n].shape == own[n].shape)
    if not taken:
        raise ConfigError("init_from", f"{run_dir}: none of its {len(theirs)} tensors match this run's "
                                       f"trainable tensors by name and shape")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for n in taken:
            (params.get(n) if n in params else buffers[n]).copy_(theirs[n])
    fresh = sorted(set(own) - set(taken))
    unused = sorted(set(theirs) - set(taken))
    return (f"init_from {folder}: {len(taken)} tensors taken ({', '.join(taken[:4])}{', ...' if len(taken) > 4 else ''})"
            f"; {len(fresh)} start fresh" + (f"; {len(unused)} of its tensors unused ({', '.join(unused[:4])})"
                                              if unused else ""))
