"""Fusion heads: classify an (image, text) pair from the towers' projected embeddings.

Four heads, the trade-offs of the low-resource multimodal survey (arXiv 2502.05568, Table 5):

* ``early`` - one MLP on the matching features ``[i, t, i*t, |i-t|]`` of both normalised embeddings:
  sees the interaction of the two modalities from the first layer.
* ``late`` - one classifier per modality, their log-probabilities mixed by learned (or equal) weights.
  A missing side is *skipped*: its weight is dropped and the others renormalised, so with the image
  missing the head is exactly the text classifier.
* ``xattn`` - a small transformer block in which a class token and the text tokens attend to the image's
  patch features (a learned "null" key is always there, so a missing image masks its patches out
  instead of attending to zeros), pooled over the class token and the text tokens, then a classifier.
* ``prototype`` - the XtremeCLIP head of :mod:`lugha.training.prototype` (one matrix of class prototypes).

Missing modality, one convention for torch and the exported graphs alike: a missing image or text is
an all-zero row (embeddings, patch grid) or an all-zero ``text_mask``. ``late`` and ``xattn`` detect it
and skip that side; ``early`` and ``prototype`` have nothing to skip with and see the zeros, which is
the survey's point about early fusion. Every head keeps its inputs un-normalised (as the encoders give
them) and normalises inside, like the prototype head, so host code never has to.

Below the heads, what they read: :class:`HeadData` (one split's projected embeddings, patches, tokens and
labels, in RAM) made by :func:`cache_features` (frozen tower outputs through the feature cache) and
:func:`project_features` (the frozen projections, once per split).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lugha.errors import ConfigError

from lugha.training.feature_cache import (FeatureCache, compute_image_features, compute_text_features, eval_mode,
                            image_inputs_key, text_inputs_key)
from lugha.training.prototype import PrototypeHead, fuse

HEAD_KINDS = ("early", "late", "xattn", "prototype")
MISSING = (None, "image", "text")
# Additive mask for attention logits: large enough to zero a key after softmax, small enough to stay
# finite if a graph is converted to fp16 (max 65504).
_MASKED = -1.0e4


def present(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B] float: 1 where the row holds anything, 0 where it is all zeros (missing)."""
    return (x.flatten(1).abs().amax(dim=1) > 0).to(x.dtype)


class FusionHead(nn.Module):
    """Base: ``forward(*inputs) -> logits [B, num_classes]``. ``input_kind`` says which tensors it takes:
    ``embeds`` = (image_embeds [B, D], text_embeds [B, D]); ``tokens`` = (image_patches [B, P, D],
    text_tokens [B, L, D], text_mask [B, L] int64)."""

    kind = ""
    input_kind = "embeds"
    skips_missing = False  # True: an all-zero side is detected and left out (late, xattn)
    num_classes: int
    dim: int

    def loss(self, *inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(*inputs), labels)

    @torch.no_grad()
    def prepare(self, data: "HeadData") -> None:
        """Data-driven initialisation from the training rows (a :class:`HeadData`) before the first step;
        the default is none."""


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class EarlyFusionHead(FusionHead):
    kind = "early"

    def __init__(self, num_classes: int, dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.net = _mlp(4 * dim, hidden, num_classes, dropout)

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        i, t = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        return self.net(torch.cat([i, t, i * t, (i - t).abs()], dim=-1))


class LateFusionHead(FusionHead):
    """``weights``: ``learned`` (softmax of two trained logits, starting equal) or ``equal`` (fixed)."""

    kind = "late"
    skips_missing = True

    def __init__(self, num_classes: int, dim: int, hidden: int = 256, dropout: float = 0.1,
                 weights: str = "learned"):
        super().__init__()
        if weights not in ("learned", "equal"):
            raise ConfigError("classify.late_weights", f"expected 'learned' or 'equal', got {weights!r}")
        self.num_classes, self.dim = num_classes, dim
        self.image_clf = _mlp(dim, hidden, num_classes, dropout)
        self.text_clf = _mlp(dim, hidden, num_classes, dropout)
        self.mix = nn.Parameter(torch.zeros(2), requires_grad=weights == "learned")

    def branches(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's own log-probabilities [B, C]."""
        li = F.log_softmax(self.image_clf(F.normalize(image_embeds, dim=-1)), dim=-1)
        lt = F.log_softmax(self.text_clf(F.normalize(text_embeds, dim=-1)), dim=-1)
        return li, lt

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        li, lt = self.branches(image_embeds, text_embeds)
        w = torch.softmax(self.mix, dim=0)
        wi, wt = w[0] * present(image_embeds), w[1] * present(text_embeds)
        total = (wi + wt).clamp_min(1e-12)  # both missing: zero logits (uniform), still finite
        return (wi / total).unsqueeze(1) * li + (wt / total).unsqueeze(1) * lt

    def loss(self, image_embeds, text_embeds, labels):
        """Fused and per-modality cross-entropy: each branch must classify alone, or skipping the other
        side at inference would leave a classifier that never learned to work by itself."""
        li, lt = self.branches(image_embeds, text_embeds)
        fused = self(image_embeds, text_embeds)
        return (F.nll_loss(fused, labels) + F.nll_loss(li, labels) + F.nll_loss(lt, labels)) / 3.0


class CrossAttentionHead(FusionHead):
    """One pre-norm transformer block: queries = [class token; text tokens], keys/values = [null;
    image patches + position]; output = mean over the class token and the real text tokens."""

    kind = "xattn"
    input_kind = "tokens"
    skips_missing = True

    def __init__(self, num_classes: int, dim: int, num_patches: int, heads: int = 4, ff_mult: int = 2,
                 dropout: float = 0.1, max_tokens: int = 24):
        super().__init__()
        if dim % heads:
            raise ConfigError("classify.attn_heads", f"embed_dim {dim} is not divisible by {heads} heads")
        self.num_classes, self.dim, self.num_patches, self.heads = num_classes, dim, num_patches, heads
        self.max_tokens = max_tokens  # text tokens it was trained on (the export cuts the text graph's output)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_ff, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = _mlp(dim, ff_mult * dim, dim, dropout)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, heads, N, D/heads]
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, image_patches: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        b = image_patches.shape[0]
        ones = torch.ones(b, 1, dtype=image_patches.dtype, device=image_patches.device)
        q_mask = torch.cat([ones, text_mask.to(image_patches.dtype)], dim=1)  # [B, 1+L]
        kv_mask = torch.cat([ones, present(image_patches).unsqueeze(1).expand(b, self.num_patches)], dim=1)
        x = torch.cat([self.cls.expand(b, -1, -1), text_tokens], dim=1)
        kv = self.norm_kv(torch.cat([self.null.expand(b, -1, -1), image_patches + self.pos], dim=1))
        q, k, v = self._split(self.q(self.norm_q(x))), self._split(self.k(kv)), self._split(self.v(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim // self.heads)
        scores = scores + (1.0 - kv_mask)[:, None, None, :] * _MASKED
        att = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, -1, self.dim)
        x = x + self.drop(self.o(att))
        x = x + self.drop(self.ff(self.norm_ff(x)))
        w = q_mask.unsqueeze(-1)
        pooled = (self.norm_out(x) * w).sum(dim=1) / w.sum(dim=1)  # the class token always counts
        return self.classifier(pooled)


class PrototypeFusionHead(PrototypeHead, FusionHead):
    """The XtremeCLIP prototype head under the fusion-head interface; prototypes start as class means."""

    kind = "prototype"

    def __init__(self, num_classes: int, dim: int):
        PrototypeHead.__init__(self, num_classes, dim)

    @torch.no_grad()
    def prepare(self, data: "HeadData", chunk: int = 256) -> None:
        """Prototypes = normalised class means of the fused features of every labelled row, summed chunk
        by chunk: the init needs a few MB whatever the dataset size (what ``init_from_examples`` gives
        for the same rows, since it only keeps each class mean's direction)."""
        rows = np.flatnonzero(data.labels >= 0)
        sums = torch.zeros(self.num_classes, self.prototypes.shape[1])
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            feats = F.normalize(fuse(*data.inputs("embeds", part)), dim=-1)
            sums.index_add_(0, torch.from_numpy(data.labels[part]), feats)
        counts = np.bincount(data.labels[rows], minlength=self.num_classes)
        have = np.flatnonzero(counts)
        if len(have) < self.num_classes:
            missing = sorted(set(range(self.num_classes)) - set(have.tolist()))
            raise ConfigError("classify.label_field", f"prototype init: class {missing[0]} has no training row")
        self.init_from_examples(sums / torch.from_numpy(counts).unsqueeze(1).float(), torch.arange(self.num_classes))


def build_head(kind: str, num_classes: int, dim: int, *, hidden: int = 256, dropout: float = 0.1,
               late_weights: str = "learned", num_patches: int = 9, attn_heads: int = 4,
               max_tokens: int = 24, seed: int = 0) -> FusionHead:
    """A fusion head of ``kind`` for ``num_classes`` classes on ``dim``-wide embeddings, initialised
    from ``seed`` alone (the caller's RNG is left untouched), so heads compared under one seed start alike."""
    if kind not in HEAD_KINDS:
        raise ConfigError("classify.head", f"expected one of {list(HEAD_KINDS)}, got {kind!r}")
    if num_classes < 2:
        raise ConfigError("classify.label_field", f"need at least 2 classes, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "early":
            return EarlyFusionHead(num_classes, dim, hidden, dropout)
        if kind == "late":
            return LateFusionHead(num_classes, dim, hidden, dropout, late_weights)
        if kind == "xattn":
            return CrossAttentionHead(num_classes, dim, num_patches, attn_heads, dropout=dropout, max_tokens=max_tokens)
        return PrototypeFusionHead(num_classes, dim)


@dataclass
class HeadData:
    """One split, projected: what a fusion head reads. ``labels``: class index per row (-1: a label the
    head has no class for, always counted wrong). ``image``/``patches`` rows follow the distinct images
    (``image_index`` maps a row to its image); ``text``/``tokens``/``mask`` follow the rows."""

    labels: np.ndarray
    langs: np.ndarray
    groups: list
    image_index: np.ndarray
    image: np.ndarray
    text: np.ndarray
    patches: np.ndarray | None = None
    tokens: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, input_kind: str, rows, missing: str | None = None) -> tuple:
        """The head's input tensors for ``rows``; ``missing`` (``image``/``text``) zeroes that side, the
        fusion heads' missing-modality convention."""
        if missing not in MISSING:
            raise ConfigError("missing", f"expected one of {list(MISSING)}, got {missing!r}")
        rows = np.asarray(rows)
        img_rows = self.image_index[rows]
        if input_kind == "tokens":
            if self.patches is None:
                raise ConfigError("classify.head", "this data was prepared without patch/token features")
            parts = [self.patches[img_rows], self.tokens[rows], self.mask[rows]]
            zero = {"image": (0,), "text": (1, 2)}.get(missing, ())
        else:
            parts = [self.image[img_rows], self.text[rows]]
            zero = {"image": (0,), "text": (1,)}.get(missing, ())
        return tuple(torch.from_numpy(np.zeros_like(p) if i in zero else np.ascontiguousarray(p))
                     for i, p in enumerate(parts))

    def save(self, path) -> None:
        arrays = {k: v for k, v in vars(self).items() if v is not None and k != "groups"}
        np.savez(path, groups=np.asarray(self.groups, dtype=object).astype(str), **arrays)

    @classmethod
    def load(cls, path) -> "HeadData":
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(**{**d, "groups": d["groups"].tolist()})


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """TextTower.forward's pooling of per-token states [B, L, H] (``cls`` or masked ``mean``), for code
    that needs the token states too and runs the tower once (the feature cache, the exported text graph)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _token_blocks(model, tokenizer, texts, batch_size, device, autocast, max_tokens: int, pooled: list):
    """Token features [B, max_tokens * H] (zero past each text's end), appending the pooled [B, H] that
    ``model.text_features`` gives (same pooling, same batches) to ``pooled`` on the way."""
    tower = model.text_tower
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask = tokenizer(texts[i:i + batch_size])
            ids, mask = ids.to(device), mask.to(device)
            with autocast():
                hidden = tower.token_features(ids, mask)
            hidden = hidden.float()
            pooled.append(pool_tokens(hidden, mask, tower.pooling).cpu().numpy())
            keep = (hidden * mask.unsqueeze(-1).to(hidden.dtype))[:, :max_tokens]
            keep = F.pad(keep, (0, 0, 0, max_tokens - keep.shape[1]))
            yield keep.reshape(len(keep), -1).cpu().numpy()


def _grid_blocks(model, store, batch_size, device, autocast, grid: int, pooled: list):
    """The last feature map pooled to ``grid`` x ``grid`` patches [B, grid*grid * C] (patch-major),
    appending the pooled features of the same map (the tower's own head) to ``pooled``."""
    from lugha.training.data import image_batches

    with eval_mode(model), torch.no_grad():
        for pixels in image_batches(store, batch_size):
            with autocast():
                fmap = model.image_feature_map(pixels.to(device))
                pooled.append(model.image_tower.net.forward_head(fmap, pre_logits=True).float().cpu().numpy())
            cells = F.adaptive_avg_pool2d(fmap.float(), grid)  # [B, C, g, g]
            yield cells.flatten(2).transpose(1, 2).reshape(len(cells), -1).cpu().numpy()


def cache_features(model, tokenizer, pairs, store, fc: FeatureCache, *, batch_size: int, device, autocast,
                   tokens: bool = False, grid: int = 3, max_tokens: int = 24, desc: str = "",
                   show_progress: bool = True) -> dict[str, np.ndarray]:
    """Frozen tower outputs of one split, through the feature cache: ``image`` [N_img, F], ``text`` [N, H];
    with ``tokens`` also ``grid`` [N_img, grid*grid*C], ``tokens`` [N, max_tokens*H] and ``lengths`` [N]
    (token counts, capped). One tower pass fills both the pooled and the token caches when neither exists."""
    ikey, tkey, n_img, n = image_inputs_key(store), text_inputs_key(pairs.texts), len(pairs.image_paths), len(pairs)
    out: dict[str, np.ndarray] = {}
    img_stash: list = []
    txt_stash: list = []
    if tokens:
        out["grid"] = fc.get_or_build(f"image-grid{grid}", ikey, n_img, lambda: _grid_blocks(
            model, store, batch_size, device, autocast, grid, img_stash), f"image patches ({desc})", show_progress)
        out["tokens"] = fc.get_or_build(f"text-tokens{max_tokens}", tkey, n, lambda: _token_blocks(
            model, tokenizer, pairs.texts, batch_size, device, autocast, max_tokens, txt_stash),
            f"text tokens ({desc})", show_progress)
        lengths = [tokenizer(pairs.texts[i:i + 1024])[1].sum(1).numpy() for i in range(0, n, 1024)]
        out["lengths"] = np.minimum(np.concatenate(lengths), max_tokens)
    out["image"] = fc.get_or_build("image", ikey, n_img, (lambda: iter(img_stash)) if img_stash else (
        lambda: compute_image_features(model, store, batch_size, device, autocast)), f"image features ({desc})",
        show_progress)
    out["text"] = fc.get_or_build("text", tkey, n, (lambda: iter(txt_stash)) if txt_stash else (
        lambda: compute_text_features(model, tokenizer, pairs.texts, batch_size, device, autocast)),
        f"text features ({desc})", show_progress)
    return out


def project_features(model, feats: dict[str, np.ndarray], pairs, classes: list[str], batch_size: int = 1024,
                     device=None) -> HeadData:
    """Run the (frozen) projections over cached features once; labels become class indices."""
    def project(arr: np.ndarray, proj, width: int | None = None) -> np.ndarray:
        out = []
        with eval_mode(model), torch.no_grad():
            for i in range(0, len(arr), batch_size):
                x = torch.as_tensor(np.array(arr[i:i + batch_size], dtype=np.float32), device=device)
                x = x if width is None else x.reshape(len(x), -1, width)
                out.append(proj(x).float().cpu().numpy())
        return np.concatenate(out)

    index = {c: i for i, c in enumerate(classes)}
    data = HeadData(np.array([index.get(lb, -1) for lb in pairs.labels], dtype=np.int64), pairs.langs,
                    list(pairs.groups), pairs.image_index, project(feats["image"], model.project_image),
                    project(feats["text"], model.project_text))
    if "grid" in feats:
        if model.image_tower.feature_map_dim != model.image_tower.feature_dim:
            raise ConfigError("classify.head", f"xattn projects each patch like the pooled features, but this "
                              f"{model.image_tower.arch} pools {model.image_tower.feature_map_dim} map channels "
                              f"into {model.image_tower.feature_dim} features (a head conv after pooling)")
        data.patches = project(feats["grid"], model.project_image, model.image_tower.feature_map_dim)
        data.tokens = project(feats["tokens"], model.project_text, model.text_tower.hidden_size)
        steps = np.arange(data.tokens.shape[1])
        data.mask = (steps[None, :] < feats["lengths"][:, None]).astype(np.int64)
        data.tokens *= data.mask[..., None]  # padding positions are zero, as the exported graph expects
    return data


def count_head_parameters(head: nn.Module) -> int:
    """Parameters that train (fixed late-fusion weights do not count)."""
    return sum(p.numel() for p in head.parameters() if p.requires_grad)


__all__ = ["HEAD_KINDS", "MISSING", "HeadData", "FusionHead", "EarlyFusionHead", "LateFusionHead", "CrossAttentionHead",
           "PrototypeFusionHead", "build_head", "count_head_parameters", "present", "pool_tokens"]
