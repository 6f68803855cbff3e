"""The XtremeCLIP-style prototype head: fused features, class-mean init, training, and its adapter."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lugha.errors import DataError  # noqa: E402
from lugha.training.prototype import FUSED_PARTS, PrototypeHead, fuse  # noqa: E402


def _few_shot(num_classes=4, shots=5, dim=16, noise=0.6, seed=0):
    """Image and text embeddings scattered around one (image, text) centre pair per class."""
    g = torch.Generator().manual_seed(seed)
    img_c, txt_c = torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(shots)
    img = img_c[labels] + noise * torch.randn(len(labels), dim, generator=g)
    txt = txt_c[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return img, txt, labels


def test_fuse_builds_the_five_matching_parts():
    img, txt = torch.randn(3, 8) * 5, torch.randn(3, 8)
    f = fuse(img, txt)
    i, t = torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)
    assert f.shape == (3, FUSED_PARTS * 8)
    for k, part in enumerate([i, t, i + t, i - t, i * t]):
        assert torch.allclose(f[:, 8 * k: 8 * (k + 1)], part, atol=1e-6)


def test_init_puts_each_class_closest_to_its_own_prototype():
    img, txt, labels = _few_shot()
    head = PrototypeHead(4, 16)
    with torch.no_grad():
        random_acc = (head(img, txt).argmax(-1) == labels).float().mean().item()
    head.init_from_examples(fuse(img, txt), labels)
    with torch.no_grad():
        logits = head(img, txt)
    assert logits.shape == (20, 4)
    assert torch.equal(logits.argmax(-1), labels), (random_acc, logits.argmax(-1))
    # prototypes are the normalised class means of the fused features
    mean0 = torch.nn.functional.normalize(fuse(img, txt)[labels == 0], dim=-1).mean(0)
    assert torch.allclose(head.prototypes[0], torch.nn.functional.normalize(mean0, dim=0), atol=1e-6)


def test_training_the_prototypes_lowers_the_loss_on_held_out_shots():
    img, txt, labels = _few_shot(shots=4, noise=1.2, seed=1)
    test_img, test_txt, test_labels = _few_shot(shots=20, noise=1.2, seed=1)  # same centres, new noise
    head = PrototypeHead(4, 16)
    head.init_from_examples(fuse(img, txt), labels)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(img, txt), labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    with torch.no_grad():
        acc = (head(test_img, test_txt).argmax(-1) == test_labels).float().mean().item()
    assert acc > 0.5  # four classes: chance is 0.25


def test_init_errors_name_the_problem():
    head = PrototypeHead(3, 8)
    img, txt, labels = _few_shot(num_classes=2, dim=8)
    with pytest.raises(DataError, match="class 2 has no example"):
        head.init_from_examples(fuse(img, txt), labels)
    with pytest.raises(DataError, match=r"\[N, 40\]"):
        head.init_from_examples(img, labels)
    with pytest.raises(DataError, match="labels"):
        head.init_from_examples(fuse(img, txt), labels[:-1])
    with pytest.raises(DataError, match="at least 2 classes"):
        PrototypeHead(1, 8)


def test_prototype_adapter_on_the_tiny_twin():
    pytest.importorskip("peft")
    import dataclasses

    from lugha.config import get_model_config
    from lugha.training.adapters import apply_adapter, trainable_state_dict
    from lugha.training.model import build_model

    cfg = get_model_config("test-tiny")
    cfg = cfg.replace(adapter=dataclasses.replace(cfg.adapter, kind="prototype"))
    model = apply_adapter(build_model(cfg, vocab_size=500), cfg.adapter, num_classes=2, verbose=False).eval()
    ids = torch.tensor([[0, 10, 11, 2], [0, 12, 13, 2], [0, 10, 11, 2], [0, 12, 13, 2]])
    mask = torch.ones_like(ids)
    pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 1)[:, :, None, None].expand(4, 2, 32, 32)
    pixels = torch.cat([pattern, pattern[:, :1]], dim=1)
    labels = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        img, txt = model.encode_image(pixels), model.encode_text(ids, mask)
    model.prototype_head.init_from_examples(fuse(img, txt), labels)
    assert torch.equal(model.prototype_head(img, txt).argmax(-1), labels)
    assert set(trainable_state_dict(model)) == {"prototype_head.prototypes", "prototype_head.logit_scale"}
