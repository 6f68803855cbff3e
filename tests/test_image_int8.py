"""The int8 recipe shared by the ONNX and TFLite image paths (lugha.export.image_int8): weight rounding
(GPTQ, kernel sums), the float-stem rule and the conv patches the GPTQ statistics are built from."""
from __future__ import annotations

import numpy as np
import pytest

from lugha.export.image_int8 import conv_patches, float_stem_length, gptq_round, round_keep_kernel_sums, round_nearest

torch = pytest.importorskip("torch")


def test_kernel_sum_rounding_keeps_each_kernel_sum_within_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 1, 3, 3)) * rng.uniform(0.01, 2.0, size=(64, 1, 1, 1))
    scale = np.abs(w).reshape(64, -1).max(1) / 127
    v = w / scale[:, None, None, None]
    q = round_keep_kernel_sums(w, scale)
    assert np.array_equal(q, np.rint(q)) and np.abs(q).max() == 127  # integers, the scale's end kept
    assert np.abs(q - v).max() < 1.0  # every tap stays within one step of its float value
    sums = lambda a: a.reshape(64, -1).sum(1)  # noqa: E731
    assert np.abs(sums(q) - sums(v)).max() <= 0.5 + 1e-9
    assert np.abs(sums(np.rint(v)) - sums(v)).max() > 1.0  # plain rounding drifts (so this test can fail)
    w1 = rng.normal(size=(8, 4, 1, 1))  # a 1x1 kernel has one tap: plain rounding
    assert np.array_equal(round_keep_kernel_sums(w1, np.full(8, 0.01)), round_nearest(w1, np.full(8, 0.01)))


def _correlated(n, d, rng):
    mix = rng.normal(size=(d, d)) + 2.0  # every input shares a strong common component, as images do
    return np.maximum(rng.normal(size=(n, d)) @ mix / d, 0)  # non-negative, like post-ReLU activations


def test_gptq_lowers_the_output_error_on_unseen_inputs_and_stays_in_the_box():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(12, 24))
    scale = np.abs(w).max(1) / 7  # a coarse 4-bit grid makes rounding choices matter
    calib, unseen = _correlated(4000, 24, rng), _correlated(2000, 24, rng)
    q = gptq_round(w, scale, calib.T @ calib / len(calib), qmin=-7, qmax=7)

    def output_mse(qi):
        return float(np.mean((unseen @ (w - qi * scale[:, None]).T) ** 2))

    v = w / scale[:, None]
    assert np.all((q == np.floor(v)) | (q == np.ceil(v)))  # floor or ceil, never further
    assert output_mse(q) < 0.5 * output_mse(round_nearest(w, scale, -7, 7))
    # with uncorrelated inputs there is nothing to compensate: GPTQ is plain rounding
    assert np.array_equal(gptq_round(w, scale, np.eye(24), qmin=-7, qmax=7), round_nearest(w, scale, -7, 7))


def test_gptq_grouped_statistics_are_per_channel():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 1, 3, 3))
    scale = np.abs(w).reshape(5, -1).max(1) / 7
    hs = np.stack([(lambda x: x.T @ x / 500)(_correlated(500, 9, rng)) for _ in range(5)])
    q = gptq_round(w, scale, hs, qmin=-7, qmax=7)
    one_by_one = [gptq_round(w[c:c + 1], scale[c:c + 1], hs[c], qmin=-7, qmax=7) for c in range(5)]
    assert np.array_equal(q, np.concatenate(one_by_one))
    assert not np.array_equal(q, round_nearest(w, scale, -7, 7))


@pytest.mark.parametrize("groups,stride,pad", [(1, 1, 1), (6, 2, 1), (2, 2, 0)])
def test_conv_patches_times_weights_is_the_conv(groups, stride, pad):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 6, 9, 9, generator=g), torch.randn(6, 6 // groups, 3, 3, generator=g)
    ref = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad, groups=groups)  # [n, out, h, w]
    p = conv_patches(x.numpy(), (3, 3), (stride, stride), (pad,) * 4, (1, 1), groups)  # [groups, rows, d]
    per = 6 // groups
    outs = [p[k] @ w[k * per:(k + 1) * per].reshape(per, -1).double().T for k in range(groups)]  # [rows, per]
    got = torch.cat(outs, 1).reshape(2, ref.shape[2], ref.shape[3], 6).permute(0, 3, 1, 2)
    torch.testing.assert_close(got.float(), ref, atol=1e-4, rtol=1e-4)
    lin = np.arange(6.0).reshape(2, 3)
    assert conv_patches(lin).shape == (1, 2, 3)  # a linear layer's input: one group, rows = batch


def test_float_stem_rule():
    stem_then_blocks = ["conv", "act", "conv", "act", "conv", "conv", "act", "conv", "residual_add"] + ["conv"] * 20
    assert float_stem_length(stem_then_blocks) == 9  # up to and including the first residual add
    late = ["conv", "act"] * 6 + ["residual_add"] + ["conv"] * 6  # past a third of the convs: none
    assert float_stem_length(late) == 0 and float_stem_length(["conv", "other", "conv"]) == 0
    assert float_stem_length(stem_then_blocks, 2) == 4  # two convs, each with its activation
    assert float_stem_length(stem_then_blocks, 0) == 0 and float_stem_length(["conv"], 5) == 1
    with pytest.raises(ValueError, match="float_stem 'all'"):
        float_stem_length(stem_then_blocks, "all")
