"""Device, precision, optimizer and learning-rate schedule of a training run."""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable

from lugha.errors import ConfigError


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch CPU threads (0 = leave as is), then restore: the setting is the run's, not
    the calling process's (tests and notebooks run many runs in one process)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device, precision: str) -> tuple[Callable, bool, str]:
    """(autocast context factory, use a GradScaler, resolved precision name).

    ``auto``: bf16 autocast on CUDA where supported, else fp16 with a GradScaler (bf16-less GPUs such as
    T4/V100 underflow fp16 gradients without loss scaling); fp32 on CPU, where autocast buys little.
    """
    import torch

    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, False, precision
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("runtime.precision", "fp16 autocast needs CUDA; use bf16 or fp32 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device.type, dtype=dtype), precision == "fp16", precision


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine to ``min_ratio`` at ``total`` (flat after)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_optimizer(model, optim_cfg, device):
    """AdamW; no weight decay on biases, norms and scalars (the logit scale); fused kernels on CUDA."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("model_overrides.adapter", "nothing in the model trains")
    o = optim_cfg
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas, eps=o.eps, **extra)


def make_scheduler(optimizer, optim_cfg, total_steps: int):
    """LambdaLR over optimizer steps; the factor is a partial (picklable, so its state saves cleanly)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, warmup=optim_cfg.warmup_steps, total=total_steps, min_ratio=optim_cfg.min_lr_ratio))
