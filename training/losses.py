"""Contrastive losses over L2-normalised embeddings: CLIP's InfoNCE and SigLIP's pairwise sigmoid.

Both take the temperature as a log-scale parameter clamped at log(100), like open_clip, so a runaway
temperature cannot blow up the logits. Normalisation is the caller's (host code), never an export's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOGIT_SCALE_MAX = math.log(100.0)
SIGLIP_INIT_SCALE = math.log(10.0)  # SigLIP paper: t' = log 10, b = -10
SIGLIP_INIT_BIAS = -10.0


def scale_from_log(log_scale: torch.Tensor) -> torch.Tensor:
    """exp(log_scale) with the open_clip ceiling of 100 (the gradient stops at the ceiling)."""
    return log_scale.clamp(max=LOGIT_SCALE_MAX).exp()


def clip_loss(img: torch.Tensor, txt: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i is the positive of row i and of column i. Inputs are normalised [B, D]."""
    logits = scale_from_log(log_scale) * img @ txt.t()
    labels = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def siglip_loss(img: torch.Tensor, txt: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Sigmoid loss: every (image, text) cell is an independent binary decision, summed per image."""
    logits = scale_from_log(log_scale) * img @ txt.t() + bias
    labels = 2 * torch.eye(img.shape[0], device=img.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / img.shape[0]
