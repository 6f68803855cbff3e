"""One small export spec per graph: its fixed I/O names, dynamic axes, sample inputs and tolerances.

Like optimum's ``OnnxConfig``: a graph role (``image_encoder``, ``text_encoder``, ``fusion_head``) is
described once here, and every exporter (ONNX, TFLite), the quantizers, the gates and the bundle writer
read the same spec, so nothing branches on role names elsewhere. A spec registered here without a tiny
export test fails ``tests/test_export_specs.py`` (optimum's rule).
"""
from __future__ import annotations

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
    "int8": (0.35, 0.98),
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

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Named dynamic axes of every input and output (ONNX ``dynamic_axes`` form)."""
        out: dict[str, dict[int, str]] = {}
        return out


def _dims(shape: tuple, static: dict[str, int] | None) -> tuple:
    static = static or {}
    return tuple(static.get(d, d) if isinstance(d, str) else d for d in shape)


def _axes(specs: tuple[TensorSpec, ...]) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in specs}


class _ImageGraph:  # nn.Module built lazily (torch is imported only when exporting)
    @staticmethod
    def build(model, layout: str):
        from torch import nn

        class ImageEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.tower, self.proj, self.nhwc = model.image_tower, model.image_proj, layout == "NHWC"

            def forward(self, pixel_values):
                if self.nhwc:  # the graph takes what the device's preprocessing gives, no host transpose
                    pixel_values = pixel_values.permute(0, 3, 1, 2)
                return self.proj(self.tower(pixel_values))

        return ImageEncoder().eval()


@dataclass(frozen=True)
class ImageEncoderSpec(ExportSpec):
    name: str = "image_encoder"
    quant_scheme: str = "static"

    def wrap(self, model, layout: str = "NCHW"):
        return _ImageGraph.build(model, layout)

    def input_names(self) -> tuple[str, ...]:
        return ("pixel_values",)

    def output_names(self) -> tuple[str, ...]:
        return ("image_embeds",)

    def inputs(self, model, layout: str = "NCHW", static=None):
        s = model.cfg.preprocess.size
        shape = ("batch", 3, s, s) if layout == "NCHW" else ("batch", s, s, 3)
        return (TensorSpec("pixel_values", "float32", _dims(shape, static), layout),)

    def outputs(self, model, static=None):
        return (TensorSpec("image_embeds", "float32", _dims(("batch", model.cfg.embed_dim), static)),)

    def dynamic_axes(self):
        return {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}


@dataclass(frozen=True)
class TextEncoderSpec(ExportSpec):
    name: str = "text_encoder"
    quant_scheme: str = "dynamic"

    def wrap(self, model, layout: str = "NCHW"):
        from torch import nn

        class TextEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.tower, self.proj = model.text_tower, model.text_proj

            def forward(self, input_ids, attention_mask):
                return self.proj(self.tower(input_ids, attention_mask))

        return TextEncoder().eval()

    def input_names(self):
        return ("input_ids", "attention_mask")

    def output_names(self):
        return ("text_embeds",)

    def inputs(self, model, layout: str = "NCHW", static=None):
        return tuple(TensorSpec(n, "int64", _dims(("batch", "seq"), static)) for n in self.input_names())

    def outputs(self, model, static=None):
        return (TensorSpec("text_embeds", "float32", _dims(("batch", model.cfg.embed_dim), static)),)

    def dynamic_axes(self):
        return {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "text_embeds": {0: "batch"}}


def fusion_head_of(model):
    """The classification head a run trained: a fusion head (``model.fusion_head``, see
    :mod:`lugha.training.fusion`) or the prototype adapter's (``model.prototype_head``); else None."""
    head = getattr(model, "fusion_head", None)
    return head if head is not None else getattr(model, "prototype_head", None)


@dataclass(frozen=True)
class FusionHeadSpec(ExportSpec):
    """A classification head on both embeddings (the prototype adapter, or an early / late fusion head).
    It normalises inside and is a few kB to a few hundred kB, so int8 buys little and costs accuracy: it
    stays float in every precision. A missing modality is an all-zero embedding row."""

    name: str = "fusion_head"
    quant_scheme: str = "none"

    def applies(self, model) -> bool:
        head = fusion_head_of(model)
        return head is not None and getattr(head, "input_kind", "embeds") == "embeds"

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
        return (TensorSpec("logits", "float32", _dims(("batch", n), static)),)

    def dynamic_axes(self):
        return {"image_embeds": {0: "batch"}, "text_embeds": {0: "batch"}, "logits": {0: "batch"}}


@dataclass(frozen=True)
class CrossAttentionHeadSpec(FusionHeadSpec):
    """A cross-attention fusion head: it reads the image's patch features and the text's token features,
    which the bundle's encoder graphs do not output, so it is no bundle role (not registered);
    ``lugha experiments fusion`` exports it to compare heads. A missing image is an all-zero patch grid,
    a missing text an all-zero ``text_mask``."""

    name: str = "fusion_xattn_head"

    def applies(self, model) -> bool:
        head = fusion_head_of(model)
        return head is not None and getattr(head, "input_kind", "") == "tokens"

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
        return (TensorSpec("image_patches", "float32", _dims(("batch", head.num_patches, head.dim), static)),
                TensorSpec("text_tokens", "float32", _dims(("batch", "seq", head.dim), static)),
                TensorSpec("text_mask", "int64", _dims(("batch", "seq"), static)))

    def dynamic_axes(self):
        return {"image_patches": {0: "batch"}, "text_tokens": {0: "batch", 1: "seq"},
                "text_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}


SPECS: dict[str, ExportSpec] = {}


def register_spec(spec: ExportSpec) -> ExportSpec:
    if spec.name in SPECS:
        raise ValueError(f"export spec {spec.name!r} registered twice")
    SPECS[spec.name] = spec
    return spec


for _spec in (ImageEncoderSpec(), TextEncoderSpec(), FusionHeadSpec()):
    register_spec(_spec)


def specs_for(model, names: tuple[str, ...] | None = None) -> list[ExportSpec]:
    """The specs that apply to ``model`` (a fusion head only when the run trained one), in order."""
    return [s for n, s in SPECS.items() if (names is None or n in names) and s.applies(model)]


def torch_reference(spec: ExportSpec, model, inputs: dict[str, np.ndarray], layout: str = "NCHW",
                    ) -> dict[str, np.ndarray]:
    """PyTorch fp32 outputs of ``spec``'s graph for named numpy inputs: the golden outputs."""
    import torch

    module = spec.wrap(model, layout)
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in spec.input_names()])
    return {spec.output_names()[0]: out.float().numpy()}


Sampler = Callable[[int], dict[str, np.ndarray]]

__all__ = ["ExportSpec", "ImageEncoderSpec", "TextEncoderSpec", "FusionHeadSpec", "CrossAttentionHeadSpec",
           "fusion_head_of", "SPECS", "register_spec",
           "specs_for", "torch_reference", "tolerance_for", "DEFAULT_TOLERANCES"]
