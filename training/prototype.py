"""XtremeCLIP-style prototype head: few-shot classification with one trainable matrix.

Each example is a pair (image, text): the record's caption or a class prompt. Both embeddings are
normalised and fused as ``[i, t, i+t, i-t, i*t]`` (the matching features of XtremeCLIP / InferSent), so a
class prototype can weigh agreement, difference and interaction of the two modalities. Prototypes start
as the normalised class means of the few-shot examples (a training-free classifier, like Tip-Adapter's
cache) and are then trained with cross-entropy; the logits are scaled cosine similarities.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lugha.errors import DataError

from lugha.training.losses import scale_from_log

FUSED_PARTS = 5


def fuse(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
    """[B, D] x [B, D] -> [B, 5D] matching features of the normalised embeddings."""
    i, t = F.normalize(img_emb, dim=-1), F.normalize(txt_emb, dim=-1)
    return torch.cat([i, t, i + t, i - t, i * t], dim=-1)


class PrototypeHead(nn.Module):
    """``forward(img_emb, txt_emb) -> logits [B, num_classes]``; ``dim`` is the embedding size D."""

    def __init__(self, num_classes: int, dim: int, init_scale: float = 10.0):
        super().__init__()
        if num_classes < 2:
            raise DataError(f"prototype head: need at least 2 classes, got {num_classes}")
        self.num_classes, self.dim = num_classes, dim
        self.prototypes = nn.Parameter(torch.randn(num_classes, FUSED_PARTS * dim) * dim ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @torch.no_grad()
    def init_from_examples(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Set each prototype to the normalised mean of its class's fused features ``feats`` [N, 5D]
        (from :func:`fuse`); every class needs at least one example."""
        if feats.ndim != 2 or feats.shape[1] != self.prototypes.shape[1]:
            raise DataError(f"prototype init: feats must be [N, {self.prototypes.shape[1]}] fused features, "
                            f"got {tuple(feats.shape)}")
        labels = labels.to(torch.long)
        if labels.shape != (feats.shape[0],):
            raise DataError(f"prototype init: {labels.shape[0]} labels for {feats.shape[0]} examples")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"prototype init: labels must be in [0, {self.num_classes}), "
                            f"got {int(labels.min())}..{int(labels.max())}")
        counts = torch.bincount(labels, minlength=self.num_classes)
        if (counts == 0).any():
            raise DataError(f"prototype init: class {int((counts == 0).nonzero()[0])} has no example")
        unit = F.normalize(feats.float(), dim=-1)
        sums = torch.zeros_like(self.prototypes).index_add_(0, labels, unit.to(self.prototypes.dtype))
        self.prototypes.copy_(F.normalize(sums / counts.unsqueeze(1), dim=-1))

    def forward(self, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
        f = F.normalize(fuse(img_emb, txt_emb), dim=-1)
        return scale_from_log(self.logit_scale) * f @ F.normalize(self.prototypes, dim=-1).t()
