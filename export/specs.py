"""One small export spec per graph: its fixed I/O names, dynamic axes, sample inputs and tolerances.

Like optimum's ``OnnxConfig``: a graph role (``image_encoder``, ``text_encoder``, ``fusion_head``) is
described once here, and every exporter (ONNX, TFLite), the quantizers, the gates and the bundle writer
read the same spec, so nothing branches on role names elsewhere. As an ``OnnxConfig`` is built for one
model and task, :func:`specs_for` asks each registered spec for its variant of a model
(:meth:`ExportSpec.for_model`): a cross-attention fusion head adds ``image_patches`` / ``text_tokens``
outputs to the encoders and reads them in ``fusion_head``. A spec (or variant) without a tiny export test
fails ``tests/test_export_specs.py`` (optimum's rule).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lugha.manifest import TensorSpec, Tolerance

# How close an exported graph must stay to PyTorch, per precision. ``max_abs`` is relative to the
# largest reference value (embeddings are not normalised, their scale depends on the model), and
# becomes an absolute number in the bundle's GraphSpec once the reference is known.
DEFAULT_TOLERANCES = {
    "fp32": (1e-4, 0.99999),
    "fp16": (2e-2, 0.999),
    "int8": (0.35, 0.99),  # the README's int8 target: cosine >= 0.99 to PyTorch on the golden rows
}


def tolerance_for(rel_max_abs: float, min_cosine: float, reference: dict[str, np.ndarray]) -> Tolerance:
    scale = max((float(np.abs(v).max()) for v in reference.values() if v.size), default=1.0)
    return Tolerance(max_abs=float(f"{max(rel_max_abs * scale, 1e-6):.3g}"), min_cosine=min_cosine)


@dataclass(frozen=True)
class ExportSpec:
    """What every graph of one role looks like. Subclasses fill in the model-dependent parts."""

    name: str
    quant_scheme: str  # what int8 means for this graph: "dynamic" (weights), "static" (calibrated), "none"
    tolerances: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    def applies(self, model) -> bool:
        return True

    def for_model(self, model) -> "ExportSpec":
        """This spec as ``model`` exports it (optimum builds an ``OnnxConfig`` for one model and task the
        same way): the outputs a cross-attention head needs appear only when the model has one."""
        return self

    def graph_info(self, model) -> dict:
        """What a runtime needs to know about this graph beyond its tensors (class names, ...): goes into
        the bundle's GraphSpec.quantization beside the scheme."""
        return {}

    def wrap(self, model, layout: str = "NCHW"):
        """An ``nn.Module`` whose forward takes the inputs by their fixed names and returns the output."""
        raise NotImplementedError

    def inputs(self, model, layout: str = "NCHW", static: dict[str, int] | None = None) -> tuple[TensorSpec, ...]:
        raise NotImplementedError

    def outputs(self, model, static: dict[str, int] | None = None) -> tuple[TensorSpec, ...]:
        raise NotImplementedError

    def input_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def output_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def dynamic_axes(self, model, layout: str = "NCHW") -> dict[str, dict[int, str]]:
        """Named dynamic axes of every input and output (ONNX ``dynamic_axes`` form), read off the tensor
        specs' named dims, so a spec states each tensor's shape once."""
        return _axes(self.inputs(model, layout) + self.outputs(model))


def _dims(shape: tuple, static: dict[str, int] | None) -> tuple:
    static = static or {}
    return tuple(static.get(d, d) if isinstance(d, str) else d for d in shape)


def _axes(specs: tuple[TensorSpec, ...]) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in specs}


def grid_pool_matrix(height: int, width: int, grid: int) -> np.ndarray:
    """[grid*grid, height*width]: row p averages the cells of ``F.adaptive_avg_pool2d(fmap, grid)``'s patch
    p (patch-major, as the training cache stores them). One constant matmul instead of adaptive pooling,
    which the TorchScript exporter refuses for sizes that do not divide (7 -> 3) and TFLite lacks."""
    out = np.zeros((grid * grid, height * width), np.float32)
    for i in range(grid):
        r0, r1 = (i * height) // grid, -(-((i + 1) * height) // grid)
        for j in range(grid):
            c0, c1 = (j * width) // grid, -(-((j + 1) * width) // grid)
            cell = np.zeros((height, width), np.float32)
            cell[r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
            out[i * grid + j] = cell.reshape(-1)
    return out


class _ImageGraph:  # nn.Module built lazily (torch is imported only when exporting)
    @staticmethod
    def build(model, layout: str, grid: int = 0):
        import torch
        from torch import nn

        class ImageEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.tower, self.proj, self.nhwc, self.grid = model.image_tower, model.image_proj, layout == "NHWC", grid

            def forward(self, pixel_values):
                if self.nhwc:  # the graph takes what the device's preprocessing gives, no host transpose
                    pixel_values = pixel_values.permute(0, 3, 1, 2)
                if not self.grid:
                    return self.proj(self.tower(pixel_values))
                fmap = self.tower.forward_feature_map(pixel_values)  # one tower pass for both outputs
                embeds = self.proj(self.tower.net.forward_head(fmap, pre_logits=True))
                _, _, h, w = fmap.shape  # static: the image size is fixed, so the matrix is a constant
                pool = torch.from_numpy(grid_pool_matrix(int(h), int(w), self.grid)).to(fmap.dtype)
                return embeds, self.proj(pool @ fmap.flatten(2).transpose(1, 2))

        return ImageEncoder().eval()


def _token_head(model):
    """The fusion head when it reads patch and token features (cross-attention), else None."""
    head = fusion_head_of(model)
    return head if head is not None and getattr(head, "input_kind", "") == "tokens" else None


@dataclass(frozen=True)
class ImageEncoderSpec(ExportSpec):
    """``patch_grid`` > 0 (a bundle with a cross-attention head): a second output ``image_patches``
    [batch, grid*grid, D], the last feature map pooled to a grid and projected, what the head reads."""

    name: str = "image_encoder"
    quant_scheme: str = "static"
    patch_grid: int = 0

    def for_model(self, model) -> "ImageEncoderSpec":
        head = _token_head(model)
        return dataclasses.replace(self, patch_grid=math.isqrt(head.num_patches)) if head is not None else self

    def wrap(self, model, layout: str = "NCHW"):
        return _ImageGraph.build(model, layout, self.patch_grid)

    def input_names(self) -> tuple[str, ...]:
        return ("pixel_values",)

    def output_names(self) -> tuple[str, ...]:
        return ("image_embeds", "image_patches") if self.patch_grid else ("image_embeds",)

    def inputs(self, model, layout: str = "NCHW", static=None):
        s = model.cfg.preprocess.size
        shape = ("batch", 3, s, s) if layout == "NCHW" else ("batch", s, s, 3)
        return (TensorSpec(self.input_names()[0], "float32", _dims(shape, static), layout),)

    def outputs(self, model, static=None):
        d = model.cfg.embed_dim
        shapes = (("batch", d), ("batch", self.patch_grid ** 2, d))
        return tuple(TensorSpec(n, "float32", _dims(sh, static)) for n, sh in zip(self.output_names(), shapes))


@dataclass(frozen=True)
class TextEncoderSpec(ExportSpec):
    """``max_tokens`` > 0 (a bundle with a cross-attention head): a second output ``text_tokens``
    [batch, tokens, D], the first ``max_tokens`` token states projected and zero past the text's end
    (tokens = min(seq, max_tokens)); the head's ``text_mask`` is ``attention_mask[:, :tokens]``."""

    name: str = "text_encoder"
    quant_scheme: str = "dynamic"
    max_tokens: int = 0

    def for_model(self, model) -> "TextEncoderSpec":
        head = _token_head(model)
        return dataclasses.replace(self, max_tokens=head.max_tokens) if head is not None else self

    def wrap(self, model, layout: str = "NCHW"):
        from torch import nn

        max_tokens = self.max_tokens

        class TextEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.tower, self.proj = model.text_tower, model.text_proj

            def forward(self, input_ids, attention_mask):
                from lugha.training.fusion import pool_tokens

                if not max_tokens:
                    return self.proj(self.tower(input_ids, attention_mask))
                hidden = self.tower.token_features(input_ids, attention_mask)
                embeds = self.proj(pool_tokens(hidden, attention_mask, self.tower.pooling))
                keep = attention_mask[:, :max_tokens].unsqueeze(-1).to(hidden.dtype)
                return embeds, self.proj(hidden[:, :max_tokens]) * keep  # padding stays zero, as in training

        return TextEncoder().eval()

    def input_names(self):
        return ("input_ids", "attention_mask")

    def output_names(self):
        return ("text_embeds", "text_tokens") if self.max_tokens else ("text_embeds",)

    def inputs(self, model, layout: str = "NCHW", static=None):
        return tuple(TensorSpec(n, "int64", _dims(("batch", "seq"), static)) for n in self.input_names())

    def outputs(self, model, static=None):
        d = model.cfg.embed_dim
        shapes = (("batch", d), ("batch", "tokens", d))
        return tuple(TensorSpec(n, "float32", _dims(sh, static)) for n, sh in zip(self.output_names(), shapes))


def fusion_head_of(model):
    """The classification head a run trained: a fusion head (``model.fusion_head``, see
    :mod:`lugha.training.fusion`) or the prototype adapter's (``model.prototype_head``); else None."""
    head = getattr(model, "fusion_head", None)
    return head if head is not None else getattr(model, "prototype_head", None)


@dataclass(frozen=True)
class FusionHeadSpec(ExportSpec):
    """A classification head on both embeddings (the prototype adapter, or an early / late fusion head;
    :meth:`for_model` gives :class:`CrossAttentionHeadSpec` for a cross-attention head). It normalises
    inside and is a few kB to a few hundred kB, so int8 buys little and costs accuracy: it stays float in
    every precision. A missing modality is an all-zero embedding row."""

    name: str = "fusion_head"
    quant_scheme: str = "none"

    def applies(self, model) -> bool:
        head = fusion_head_of(model)
        return head is not None and getattr(head, "input_kind", "embeds") == "embeds"

    def for_model(self, model) -> "ExportSpec":
        return CrossAttentionHeadSpec() if _token_head(model) is not None else self

    def graph_info(self, model) -> dict:
        """``labels``: class names in logit order (classify runs); ``head``: its kind; ``missing``: what the
        head does with an all-zero side (``skipped``: late / xattn classify from the other side alone)."""
        head = fusion_head_of(model)
        info = {"head": getattr(head, "kind", "") or type(head).__name__,
                "missing": "skipped" if getattr(head, "skips_missing", False) else "zero-filled"}
        if getattr(head, "classes", None):
            info["labels"] = list(head.classes)
        return info

    def wrap(self, model, layout: str = "NCHW"):
        from torch import nn

        class FusionHead(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = fusion_head_of(model)

            def forward(self, image_embeds, text_embeds):
                return self.head(image_embeds, text_embeds)

        return FusionHead().eval()

    def input_names(self):
        return ("image_embeds", "text_embeds")

    def output_names(self):
        return ("logits",)

    def inputs(self, model, layout: str = "NCHW", static=None):
        return tuple(TensorSpec(n, "float32", _dims(("batch", model.cfg.embed_dim), static)) for n in self.input_names())

    def outputs(self, model, static=None):
        n = fusion_head_of(model).num_classes
        return (TensorSpec(self.output_names()[0], "float32", _dims(("batch", n), static)),)


@dataclass(frozen=True)
class CrossAttentionHeadSpec(FusionHeadSpec):
    """The ``fusion_head`` graph of a cross-attention head: it reads the image encoder's ``image_patches``
    and the text encoder's ``text_tokens`` (extra outputs those graphs get for such a model, see their
    :meth:`for_model`) and ``text_mask`` = ``attention_mask[:, :tokens]``. A missing image is an all-zero
    patch grid, a missing text an all-zero ``text_mask``."""

    def applies(self, model) -> bool:
        return _token_head(model) is not None

    def for_model(self, model) -> "ExportSpec":
        return self

    def wrap(self, model, layout: str = "NCHW"):
        from torch import nn

        class CrossAttentionHead(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = fusion_head_of(model)

            def forward(self, image_patches, text_tokens, text_mask):
                return self.head(image_patches, text_tokens, text_mask)

        return CrossAttentionHead().eval()

    def input_names(self):
        return ("image_patches", "text_tokens", "text_mask")

    def inputs(self, model, layout: str = "NCHW", static=None):
        head = fusion_head_of(model)
        kinds = (("float32", ("batch", head.num_patches, head.dim)), ("float32", ("batch", "tokens", head.dim)),
                 ("int64", ("batch", "tokens")))
        return tuple(TensorSpec(n, dtype, _dims(shape, static)) for n, (dtype, shape) in zip(self.input_names(), kinds))


SPECS: dict[str, ExportSpec] = {}


def register_spec(spec: ExportSpec) -> ExportSpec:
    if spec.name in SPECS:
        raise ValueError(f"export spec {spec.name!r} registered twice")
    SPECS[spec.name] = spec
    return spec


for _spec in (ImageEncoderSpec(), TextEncoderSpec(), FusionHeadSpec()):
    register_spec(_spec)


def specs_for(model, names: tuple[str, ...] | None = None) -> list[ExportSpec]:
    """The specs that apply to ``model``, as it exports them (:meth:`ExportSpec.for_model`), in order:
    a fusion head only when the run trained one; patch/token outputs only for a cross-attention head."""
    chosen = (s.for_model(model) for n, s in SPECS.items() if names is None or n in names)
    return [s for s in chosen if s.applies(model)]


def torch_reference(spec: ExportSpec, model, inputs: dict[str, np.ndarray], layout: str = "NCHW",
                    ) -> dict[str, np.ndarray]:
    """PyTorch fp32 outputs of ``spec``'s graph for named numpy inputs (every output): the golden outputs."""
    return reference_runner(spec, model, layout)(inputs)


def reference_runner(spec: ExportSpec, model, layout: str = "NCHW") -> Callable[[dict], dict[str, np.ndarray]]:
    """``inputs -> outputs`` of ``spec``'s PyTorch graph by the spec's names, one or several outputs;
    int32 token inputs (what static TFLite graphs take) are widened to the int64 PyTorch wants."""
    import torch

    module = spec.wrap(model, layout)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [np.ascontiguousarray(inputs[n]) for n in spec.input_names()]
        with torch.no_grad():
            out = module(*[torch.from_numpy(a.astype(np.int64) if a.dtype == np.int32 else a) for a in args])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {name: o.float().numpy() for name, o in zip(spec.output_names(), outs)}

    return run


Sampler = Callable[[int], dict[str, np.ndarray]]

__all__ = ["ExportSpec", "ImageEncoderSpec", "TextEncoderSpec", "FusionHeadSpec", "CrossAttentionHeadSpec",
           "fusion_head_of", "SPECS", "register_spec", "specs_for", "torch_reference", "reference_runner",
           "tolerance_for", "grid_pool_matrix", "DEFAULT_TOLERANCES"]
