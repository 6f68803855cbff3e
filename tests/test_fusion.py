"""Fusion heads on hand-made embeddings: shapes, the missing-modality convention, training, the data they read."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lugha.errors import ConfigError  # noqa: E402
from lugha.training.classify import accuracy_report, head_steps, predict  # noqa: E402
from lugha.training.fusion import HEAD_KINDS, HeadData, build_head, count_head_parameters  # noqa: E402
from lugha.training.optim import make_optimizer, make_scheduler  # noqa: E402
from lugha.training.train_config import OptimConfig  # noqa: E402

C, D, P, L = 4, 16, 4, 6


def inputs_for(head, b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if head.input_kind == "tokens":
        mask = torch.ones(b, L, dtype=torch.int64)
        mask[0, 3:] = 0
        return torch.randn(b, P, D, generator=g), torch.randn(b, L, D, generator=g), mask
    return torch.randn(b, D, generator=g), torch.randn(b, D, generator=g)


def heads():
    return {k: build_head(k, C, D, num_patches=P, hidden=32, dropout=0.0, attn_heads=2).eval() for k in HEAD_KINDS}


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_each_head_gives_finite_logits_per_row_and_class(kind):
    head = heads()[kind]
    out = head(*inputs_for(head, b=5))
    assert out.shape == (5, C) and torch.isfinite(out).all()
    assert head.kind == kind and head.num_classes == C and count_head_parameters(head) > 0


def test_heads_of_one_seed_start_alike_and_seeds_differ():
    a, b = build_head("early", C, D, seed=3), build_head("early", C, D, seed=3)
    c = build_head("early", C, D, seed=4)
    x = inputs_for(a)
    assert torch.equal(a.eval()(*x), b.eval()(*x)) and not torch.equal(a(*x), c.eval()(*x))


def test_unknown_head_and_too_few_classes_are_config_errors():
    with pytest.raises(ConfigError, match="classify.head"):
        build_head("mid", C, D)
    with pytest.raises(ConfigError, match="2 classes"):
        build_head("early", 1, D)


def test_late_fusion_skips_a_missing_side_and_equals_the_other_classifier():
    head = heads()["late"]
    with torch.no_grad():
        head.mix.copy_(torch.tensor([1.5, -0.5]))  # unequal weights: renormalising must still give 1
        img, txt = inputs_for(head)
        li, lt = head.branches(img, txt)
        text_only = head(torch.zeros_like(img), txt)
        image_only = head(img, torch.zeros_like(txt))
        both = head(img, txt)
        none = head(torch.zeros_like(img), torch.zeros_like(txt))
    assert torch.isfinite(text_only).all() and torch.isfinite(image_only).all() and torch.isfinite(none).all()
    torch.testing.assert_close(text_only, lt)
    torch.testing.assert_close(image_only, li)
    w = torch.softmax(head.mix, 0)
    torch.testing.assert_close(both, w[0] * li + w[1] * lt)
    assert torch.equal(none, torch.zeros_like(none))


def test_cross_attention_ignores_what_is_masked_out():
    head = heads()["xattn"]
    patches, tokens, mask = inputs_for(head)
    with torch.no_grad():
        ref = head(patches, tokens, mask)
        noisy = tokens.clone()
        noisy[0, 3:] = 100.0  # padding of row 0
        assert torch.allclose(head(patches, noisy, mask), ref, atol=1e-5)
        # text missing: the tokens' values no longer matter, the image still does
        no_text = head(patches, tokens, torch.zeros_like(mask))
        assert torch.allclose(head(patches, torch.randn_like(tokens), torch.zeros_like(mask)), no_text, atol=1e-5)
        assert not torch.allclose(head(torch.randn_like(patches), tokens, torch.zeros_like(mask)), no_text)
        # image missing: the patches are skipped (only the null key is attended), text still counts
        no_img = head(torch.zeros_like(patches), tokens, mask)
        assert torch.isfinite(no_img).all() and not torch.allclose(no_img, ref)
        assert not torch.allclose(head(torch.zeros_like(patches), torch.randn_like(tokens), mask), no_img)


def synthetic(n: int = 96, seed: int = 0) -> HeadData:
    """Separable data: the class centre (the same for every seed) in both modalities, plus noise."""
    centres = np.random.default_rng(0).standard_normal((C, D)).astype(np.float32) * 2
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, C, n)
    img = centres[labels] + rng.standard_normal((n, D)).astype(np.float32)
    txt = centres[labels] + rng.standard_normal((n, D)).astype(np.float32)
    patches = img[:, None, :] + rng.standard_normal((n, P, D)).astype(np.float32) * 0.5
    tokens = txt[:, None, :] + rng.standard_normal((n, L, D)).astype(np.float32) * 0.5
    lengths = rng.integers(2, L + 1, n)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int64)
    return HeadData(labels.astype(np.int64), np.array(["en", "sw"] * (n // 2)), [str(i) for i in range(n)],
                    np.arange(n), img, txt, patches, (tokens * mask[..., None]).astype(np.float32), mask)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_each_head_trains_loss_falls_and_it_beats_chance(kind):
    data = synthetic()
    head = build_head(kind, C, D, num_patches=P, hidden=32, attn_heads=2, seed=0)
    head.prepare(data)
    oc = OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.0)
    opt = make_optimizer(head, oc, torch.device("cpu"))
    losses = list(head_steps(head, data, opt, make_scheduler(opt, oc, 60), batch_size=16, seed=0, steps=60))
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    report = accuracy_report(head, synthetic(seed=1), data.labels)
    assert report["mean"]["mean_acc"] > 0.6  # chance is 0.25
    assert set(report["languages"]) == {"en", "sw"}
    assert {"acc", "acc_image_only", "acc_text_only", "majority_acc", "n"} <= set(report["languages"]["en"])


def test_prototype_init_in_chunks_equals_the_all_at_once_class_means():
    from lugha.training.prototype import fuse

    data = synthetic(50)
    assert len(set(data.labels.tolist())) == C
    chunked = build_head("prototype", C, D)
    chunked.prepare(data, chunk=7)
    whole = build_head("prototype", C, D)
    whole.init_from_examples(fuse(*data.inputs("embeds", np.arange(50))), torch.from_numpy(data.labels))
    torch.testing.assert_close(chunked.prototypes, whole.prototypes)


def test_batches_are_a_function_of_the_step_so_training_continues_exactly():
    data = synthetic()
    oc = OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0)

    def run(split_at: int | None):
        head = build_head("early", C, D, hidden=32, dropout=0.0, seed=0)
        opt = make_optimizer(head, oc, torch.device("cpu"))
        sched = make_scheduler(opt, oc, 20)
        if split_at is None:
            return list(head_steps(head, data, opt, sched, 16, 0, 20)), head
        first = list(head_steps(head, data, opt, sched, 16, 0, split_at))
        return first + list(head_steps(head, data, opt, sched, 16, 0, 20, start_step=split_at)), head

    (a, ha), (b, hb) = run(None), run(7)
    assert a == b
    assert all(torch.equal(x, y) for x, y in zip(ha.state_dict().values(), hb.state_dict().values()))


def test_head_data_zeroes_the_missing_side_and_round_trips(tmp_path):
    data = synthetic(8)
    img, txt = data.inputs("embeds", [0, 1], "image")
    assert not img.any() and txt.any()
    patches, tokens, mask = data.inputs("tokens", [0, 1], "text")
    assert patches.any() and not tokens.any() and not mask.any()
    with pytest.raises(ConfigError, match="missing"):
        data.inputs("embeds", [0], "audio")
    data.save(tmp_path / "d.npz")
    back = HeadData.load(tmp_path / "d.npz")
    assert back.groups == data.groups and np.array_equal(back.tokens, data.tokens)
    assert np.array_equal(predict(heads()["early"], back), predict(heads()["early"], data))
