"""Adapters on the tiny twins: what freezes, what a checkpoint holds, reload and LoRA merge equivalence."""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("timm")

from lugha.config import get_model_config  # noqa: E402
from lugha.errors import ConfigError  # noqa: E402
from lugha.training.adapters import (  # noqa: E402
    AdapterStateError, apply_adapter, count_parameters, has_lora, load_trainable_state_dict, merge_adapters,
    resolve_text_targets, trainable_state_dict)
from lugha.training.model import build_model, load_text_tokenizer  # noqa: E402

TEXTS = ["a red apple", "mbwa anakimbia", "ọmọ náà ń sùn", "kare yana gudu"]


@pytest.fixture(scope="module")
def toks():
    return {n: load_text_tokenizer(get_model_config(n)) for n in ("test-tiny", "test-tiny-b0")}


def _model(name, toks, **adapter_changes):
    cfg = get_model_config(name)
    cfg = cfg.replace(adapter=dataclasses.replace(cfg.adapter, **adapter_changes))
    model = build_model(cfg, toks[name].vocab_size)
    return cfg, model


def _inputs(name, toks):
    g = torch.Generator().manual_seed(0)
    pixels = torch.nn.functional.interpolate(torch.randn(4, 3, 4, 4, generator=g) * 2, size=32, mode="bilinear")
    ids, mask = toks[name](TEXTS)
    return pixels, ids, mask


def _randomise_lora(model, seed=0):
    """LoRA B starts at zero (a no-op); give every LoRA tensor values so merging has something to merge."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _outputs(model, pixels, ids, mask):
    model.eval()
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(ids, mask)


@pytest.mark.parametrize("kind,image_lora,img_frozen,txt_frozen", [
    ("projection", False, True, True), ("lora", False, True, False), ("lora", True, False, False),
    ("prototype", False, True, True)])
def test_frozen_flags_per_adapter_kind(kind, image_lora, img_frozen, txt_frozen, toks, capsys):
    cfg, model = _model("test-tiny", toks, kind=kind, image_lora=image_lora)
    apply_adapter(model, cfg.adapter, num_classes=3)
    assert (model.image_tower_frozen, model.text_tower_frozen) == (img_frozen, txt_frozen)
    heads_train = model.image_proj.net.weight.requires_grad
    assert heads_train == (kind != "prototype") == model.logit_scale.requires_grad
    assert (model.prototype_head is not None) == (kind == "prototype")
    trainable, total = count_parameters(model)
    assert f"{trainable:,} trainable of {total:,}" in capsys.readouterr().err
    # frozen towers stay in eval mode under model.train(): their BatchNorm statistics must not drift
    model.train()
    assert not model.image_tower.training
    assert model.text_tower.training == (not txt_frozen)


@pytest.mark.parametrize("name,kind,image_lora", [
    ("test-tiny", "lora", True), ("test-tiny-b0", "lora", False), ("test-tiny", "projection", False),
    ("test-tiny-b0", "prototype", False)])
def test_trainable_state_dict_holds_only_what_trains(name, kind, image_lora, toks):
    cfg, model = _model(name, toks, kind=kind, image_lora=image_lora)
    apply_adapter(model, cfg.adapter, num_classes=4, verbose=False)
    sd = trainable_state_dict(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(sd) == trains
    trainable, total = count_parameters(model)
    assert sum(v.numel() for v in sd.values()) == trainable
    assert trainable < 0.02 * total  # the tiny twins' frozen backbones are ~8 M parameters
    if kind == "lora":
        assert any(".lora_A." in n for n in sd) and not any("embeddings" in n for n in sd)
        assert any(n.startswith("image_tower.") for n in sd) == image_lora
    if kind == "prototype":
        assert set(sd) == {"prototype_head.prototypes", "prototype_head.logit_scale"}


def test_save_and_reload_reproduces_outputs(tmp_path, toks):
    from safetensors.torch import load_file, save_file

    cfg, model = _model("test-tiny", toks, kind="lora", image_lora=True)
    apply_adapter(model, cfg.adapter, verbose=False)
    pixels, ids, mask = _inputs("test-tiny", toks)
    bn_before = {k: v.clone() for k, v in model.image_tower.state_dict().items() if "running" in k}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(pixels, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bn_after = {k: v for k, v in model.image_tower.state_dict().items() if "running" in k}
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before)  # no drift the checkpoint misses
    path = tmp_path / "trainable.safetensors"
    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(path))
    want = _outputs(model, pixels, ids, mask)

    _, fresh = _model("test-tiny", toks, kind="lora", image_lora=True)
    apply_adapter(fresh, cfg.adapter, verbose=False)
    assert not torch.equal(_outputs(fresh, pixels, ids, mask)[0], want[0])
    load_trainable_state_dict(fresh, load_file(str(path)))
    got = _outputs(fresh, pixels, ids, mask)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert path.stat().st_size < 0.02 * sum(p.numel() * 4 for p in fresh.parameters())


def test_reload_into_a_differently_adapted_model_is_an_error(toks):
    cfg, lora = _model("test-tiny", toks, kind="lora")
    apply_adapter(lora, cfg.adapter, verbose=False)
    pcfg, proj = _model("test-tiny", toks, kind="projection")
    apply_adapter(proj, pcfg.adapter, verbose=False)
    with pytest.raises(AdapterStateError, match="unexpected"):
        load_trainable_state_dict(proj, trainable_state_dict(lora))
    sd = trainable_state_dict(proj)
    sd["image_proj.net.weight"] = torch.zeros(3, 3)
    with pytest.raises(AdapterStateError, match="shape"):
        load_trainable_state_dict(proj, sd)


@pytest.mark.parametrize("name,image_lora,channels_last", [
    ("test-tiny", True, False), ("test-tiny-b0", True, True), ("test-tiny-b0", False, False)])
def test_merge_keeps_outputs(name, image_lora, channels_last, toks):
    cfg, model = _model(name, toks, kind="lora", image_lora=image_lora)
    model.set_channels_last(channels_last)
    plain_keys = set(model.state_dict())
    apply_adapter(model, cfg.adapter, verbose=False)
    _randomise_lora(model)
    pixels, ids, mask = _inputs(name, toks)
    before = _outputs(model, pixels, ids, mask)
    _, base = _model(name, toks)
    base_out = _outputs(base, pixels, ids, mask)
    assert (before[1] - base_out[1]).abs().max() > 1e-3  # LoRA really changes what gets merged
    assert ((before[0] - base_out[0]).abs().max() > 1e-3) == image_lora
    merge_adapters(model)
    after = _outputs(model, pixels, ids, mask)
    assert not has_lora(model)
    assert set(model.state_dict()) == plain_keys  # export sees the plain architecture again
    assert (before[0] - after[0]).abs().max().item() <= 1e-5
    assert (before[1] - after[1]).abs().max().item() <= 1e-5


def test_text_targets_map_between_bert_and_distilbert(toks):
    _, bert = _model("test-tiny", toks)
    _, distil = _model("test-tiny-b0", toks)
    assert resolve_text_targets(bert.text_tower.net, ("query", "value")) == ["query", "value"]
    assert resolve_text_targets(distil.text_tower.net, ("query", "value")) == ["q_lin", "v_lin"]
    assert resolve_text_targets(bert.text_tower.net, ("q_lin", "v_lin")) == ["query", "value"]
    with pytest.raises(ConfigError, match="adapter.text_targets.*'nonexistent'"):
        resolve_text_targets(bert.text_tower.net, ("nonexistent",))


def test_adapter_errors(toks):
    cfg, model = _model("test-tiny", toks, kind="prototype")
    with pytest.raises(ConfigError, match="num_classes"):
        apply_adapter(model, cfg.adapter)
    cfg, model = _model("test-tiny", toks, kind="projection")
    apply_adapter(model, cfg.adapter, verbose=False)
    with pytest.raises(ConfigError, match="already has"):
        apply_adapter(model, cfg.adapter, verbose=False)
