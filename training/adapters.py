"""What trains: LoRA (peft) on the towers, projection heads only, or an XtremeCLIP prototype head.

Apply an adapter right after :func:`lugha.training.model.build_model`; a checkpoint then needs only
:func:`trainable_state_dict` (LoRA A/B, projections, temperature, heads: KB-MB), and reloading it means
build_model -> apply_adapter (same config) -> :func:`load_trainable_state_dict`.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from lugha.config import AdapterConfig
from lugha.errors import ConfigError, LughaError

from lugha.training.prototype import PrototypeHead
from lugha.training.towers import pointwise_conv_names

KINDS = ("lora", "projection", "prototype")
# Same projection, different names per architecture: BERT/XLM-R, DistilBERT, LLaMA-style.
_TARGET_ALIASES = (
    ("query", "q_lin", "q_proj"),
    ("key", "k_lin", "k_proj"),
    ("value", "v_lin", "v_proj"),
    ("attention.output.dense", "out_lin", "o_proj"),
    ("intermediate.dense", "lin1", "up_proj"),
    ("output.dense", "lin2", "down_proj"),
)


class AdapterStateError(LughaError, ValueError):
    """A trainable state dict that does not fit the model (other adapter, other sizes)."""


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def resolve_text_targets(net: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Map target names to the ones this encoder uses (``query`` -> ``q_lin`` on DistilBERT)."""
    linear = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]

    def present(t: str) -> bool:
        return any(n == t or n.endswith("." + t) for n in linear)

    out = []
    for t in targets:
        if present(t):
            out.append(t)
            continue
        group = next((g for g in _TARGET_ALIASES if t in g), ())
        alias = next((a for a in group if a != t and present(a)), None)
        if alias is None:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise ConfigError("adapter.text_targets", f"{t!r} matches no Linear of the text tower; "
                                                      f"its Linear names end in {leaves}")
        out.append(alias)
    return list(dict.fromkeys(out))


def _lora_config(cfg: AdapterConfig, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none")


def apply_adapter(model, cfg: AdapterConfig, num_classes: int | None = None, verbose: bool = True):
    """Freeze and wrap ``model`` (a LowClip) for ``cfg.kind``; returns the same model.

    ``lora``: LoRA on the text tower's ``cfg.text_targets`` (+ the image tower's pointwise convs if
    ``cfg.image_lora``); projections and temperature train. ``projection``: towers frozen, projections
    and temperature train. ``prototype``: everything frozen except a :class:`PrototypeHead` of
    ``num_classes`` classes (initialise it with ``init_from_examples`` before training).
    """
    from peft import get_peft_model

    if cfg.kind not in KINDS:
        raise ConfigError("adapter.kind", f"expected one of {KINDS}, got {cfg.kind!r}")
    if model.adapter_kind is not None:
        raise ConfigError("adapter.kind", f"model already has a {model.adapter_kind!r} adapter")
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.kind == "prototype":
        if not num_classes:
            raise ConfigError("adapter.kind", "a prototype head needs num_classes")
        model.prototype_head = PrototypeHead(num_classes, model.cfg.embed_dim)
    else:
        for module in (model.image_proj, model.text_proj):
            module.requires_grad_(True)
        for p in (model.logit_scale, model.logit_bias):
            if p is not None:
                p.requires_grad_(True)
    if cfg.kind == "lora":
        tower = model.text_tower
        tower.net = get_peft_model(tower.net, _lora_config(cfg, resolve_text_targets(tower.net, cfg.text_targets)))
        if cfg.image_lora:
            img = model.image_tower
            img.net = get_peft_model(img.net, _lora_config(cfg, pointwise_conv_names(img.net)))
            if img.channels_last:  # new LoRA convs are created contiguous
                img.set_channels_last(True)
    model.adapter_kind = cfg.kind
    if verbose:
        trainable, total = count_parameters(model)
        print(f"adapter {cfg.kind}: {trainable:,} trainable of {total:,} parameters "
              f"({100.0 * trainable / max(total, 1):.3f}%)", file=sys.stderr)
    return model


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that train (plus BatchNorm statistics of BatchNorms whose weights train), detached.

    LoRA A/B, projections, temperature, heads: what a small checkpoint stores. The frozen backbone is
    rebuilt from the config on load.
    """
    out = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.weight is not None and mod.weight.requires_grad:
            for b, buf in mod.named_buffers(recurse=False):
                out[f"{name}.{b}"] = buf.detach().contiguous()
    return out


def load_trainable_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load a :func:`trainable_state_dict` into a model built and adapted the same way; names and shapes
    must match exactly (a LoRA checkpoint on a projection-only model is an error, not a silent no-op)."""
    expected = trainable_state_dict(model)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise AdapterStateError(f"trainable state does not fit the model (adapter "
                                f"{getattr(model, 'adapter_kind', None)!r}): missing {missing[:3]} "
                                f"({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise AdapterStateError(f"trainable state: {k} has shape {tuple(v.shape)}, "
                                    f"model has {tuple(expected[k].shape)}")
    model.load_state_dict(sd, strict=False)


def merge_adapters(model):
    """Fold LoRA into the base weights (peft ``merge_and_unload``) so exports see plain modules."""
    from peft import PeftModel

    for tower in (model.text_tower, model.image_tower):
        if isinstance(tower.net, PeftModel):
            tower.net = tower.net.merge_and_unload()
            if getattr(tower, "channels_last", False):
                tower.set_channels_last(True)
    return model


def has_lora(model) -> bool:
    from peft import PeftModel

    return any(isinstance(t.net, PeftModel) for t in (model.text_tower, model.image_tower))
