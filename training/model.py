"""The LowCLIP dual encoder: image tower + text tower + projection heads into one shared space.

Everything a device runs (towers, projections) is plain modules; L2-normalisation and the temperature
live in :meth:`LowClip.loss` / :meth:`LowClip.logits`, host code that is never exported.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lugha.config import ModelConfig

from lugha.training import losses
from lugha.training.text_tower import TextTower, TorchTokenizer, build_text_tower, load_text_tokenizer
from lugha.training.towers import ImageTower, build_image_tower, expected_normalization


class ProjectionHead(nn.Module):
    """``linear``: one bias-free matrix (CLIP); ``mlp``: Linear-GELU-Linear (LowCLIP's option)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear"):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim, bias=False)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
        else:
            raise ValueError(f"projection kind must be 'linear' or 'mlp', got {kind!r}")
        for m in self.modules():
            if isinstance(m, nn.Linear):  # CLIP's init: std = width ** -0.5
                nn.init.normal_(m.weight, std=m.in_features ** -0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LowClip(nn.Module):
    def __init__(self, cfg: ModelConfig, image_tower: ImageTower, text_tower: TextTower, projection: str = "linear"):
        super().__init__()
        self.cfg = cfg
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_proj = ProjectionHead(image_tower.feature_dim, cfg.embed_dim, projection)
        self.text_proj = ProjectionHead(text_tower.hidden_size, cfg.embed_dim, projection)
        if cfg.loss == "siglip":
            self.logit_scale = nn.Parameter(torch.tensor(losses.SIGLIP_INIT_SCALE))
            self.logit_bias = nn.Parameter(torch.tensor(losses.SIGLIP_INIT_BIAS))
        else:
            self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            self.logit_bias = None
        self.prototype_head = None  # set by apply_adapter(kind="prototype")
        self.adapter_kind: str | None = None

    # -- towers and projections (what gets exported) --------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower(pixels)

    def image_feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower.forward_feature_map(pixels)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_tower(input_ids, attention_mask)

    def project_image(self, feats: torch.Tensor) -> torch.Tensor:
        return self.image_proj(feats)

    def project_text(self, feats: torch.Tensor) -> torch.Tensor:
        return self.text_proj(feats)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.image_features(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.text_features(input_ids, attention_mask))

    # -- host-side scoring -------------------------------------------------------------------------------
    def logits(self, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
        """[B_img, B_txt] scaled cosine similarities (+ bias for SigLIP): what the loss sees."""
        out = losses.scale_from_log(self.logit_scale) * F.normalize(img_emb, dim=-1) @ F.normalize(txt_emb, dim=-1).t()
        return out + self.logit_bias if self.logit_bias is not None else out

    def loss(self, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
        img, txt = F.normalize(img_emb, dim=-1), F.normalize(txt_emb, dim=-1)
        if self.logit_bias is not None:
            return losses.siglip_loss(img, txt, self.logit_scale, self.logit_bias)
        return losses.clip_loss(img, txt, self.logit_scale)

    def forward(self, pixels, input_ids, attention_mask) -> torch.Tensor:
        """The training step's loss for a batch of pairs."""
        return self.loss(self.encode_image(pixels), self.encode_text(input_ids, attention_mask))

    # -- what trains --------------------------------------------------------------------------------------
    @property
    def image_tower_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.image_tower.parameters())

    @property
    def text_tower_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.text_tower.parameters())

    def train(self, mode: bool = True) -> "LowClip":
        """Frozen towers stay in eval mode: BatchNorm statistics must not drift under a tower whose
        weights do not train (the small checkpoint would not hold the drift). An image tower with LoRA
        is only partly trained, so its BatchNorm stays frozen too."""
        super().train(mode)
        if mode:
            if not all(p.requires_grad for p in self.image_tower.parameters()):
                self.image_tower.eval()
            if self.text_tower_frozen:
                self.text_tower.eval()
        return self

    def set_channels_last(self, enabled: bool = True) -> "LowClip":
        self.image_tower.set_channels_last(enabled)
        return self


def build_model(cfg: ModelConfig, vocab_size: int | None = None, *, seed: int = 0,
                projection: str | None = None, channels_last: bool = False) -> LowClip:
    """Build the dual encoder of ``cfg``; pretrained towers load their weights, the rest is seeded.

    Random init (projections, test-twin towers) is drawn from ``seed`` so the same config always gives
    the same frozen weights: a checkpoint that holds only the trained tensors then reloads exactly.
    ``vocab_size`` is needed for a random-init text tower (test twins): pass the tokenizer's.
    ``projection``: ``linear`` (default) or ``mlp``; taken from ``cfg.projection`` if the config has one.
    """
    projection = projection or getattr(cfg, "projection", "linear")
    want = expected_normalization(cfg.image_tower)
    have = (tuple(cfg.preprocess.mean), tuple(cfg.preprocess.std))
    if want is not None and not _close(want, have):
        warnings.warn(f"{cfg.name}: preprocess mean/std {have} differ from what the {cfg.image_tower.arch} "
                      f"weights were trained with {want}", stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_tower = build_image_tower(cfg.image_tower, channels_last=channels_last)
        text_tower = build_text_tower(cfg.text_tower, vocab_size)
        return LowClip(cfg, image_tower, text_tower, projection)


def _close(a, b, tol: float = 1e-3) -> bool:
    return all(math.isclose(x, y, abs_tol=tol) for u, v in zip(a, b) for x, y in zip(u, v))


__all__ = ["LowClip", "ProjectionHead", "build_model", "load_text_tokenizer", "TorchTokenizer"]
