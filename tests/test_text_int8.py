"""Per-token text int8 (lugha.export.text_int8): exact algebra on a one-layer graph, outlier tokens,
batch independence, and the real path on a test-tiny text tower against quantize_dynamic."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lugha.export.text_int8 import (input_statistics, quantize_linear_per_token,  # noqa: E402
                                    quantize_text_per_token, smooth_factors)

D, N = 32, 24


def _linear_graph(w: np.ndarray):
    """``text_embeds = (embeds[input_ids] * mask) @ w``: one linear layer fed by a lookup, so the layer's
    input can be steered from ``input_ids`` (row i of the table is what token i feeds the layer)."""
    table = np.random.default_rng(1).normal(size=(64, D)).astype(np.float32)
    table[7] *= 40.0  # token 7: an outlier token, as transformer encoders have ([SEP], punctuation)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"]),
             helper.make_node("Mul", ["emb", "mask3"], ["x"]),
             helper.make_node("MatMul", ["x", "w"], ["text_embeds"], name="linear")]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
                          helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["b", "s", N])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([-1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, ids, mask):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _batches(rng, n=8):
    ids = rng.integers(8, 64, size=(n, 6)).astype(np.int64)
    return [(ids, np.ones_like(ids))]


def test_per_token_linear_matches_float_and_beats_one_scale_per_tensor(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D, N)).astype(np.float32)
    model = _linear_graph(w)
    ids = rng.integers(8, 64, size=(2, 6)).astype(np.int64)
    ids[0, 2] = 7  # one outlier token in the batch
    mask = np.ones_like(ids)
    ref = _run(model, ids, mask)
    q = _linear_graph(w)
    done = quantize_linear_per_token(q, input_statistics(q, _batches(rng)), alpha=0.5)
    assert done == {"layers": 1, "inputs": 1, "gptq_layers": 1}
    assert "MatMulInteger" in {n.op_type for n in q.graph.node}
    assert not [t for t in q.graph.initializer if t.name == "w"]  # the float weight is gone
    got = _run(q, ids, mask)
    normal = np.ones(ids.shape, bool)
    normal[0, 2] = False
    rel = np.abs(got - ref)[normal].max() / np.abs(ref[normal]).max()
    assert rel < 0.02, rel  # int8 weights + 8-bit per-token activations: ~1 % of the range
    # onnxruntime's dynamic quantization: one activation scale for the whole batch, so the outlier
    # token costs every other token its resolution
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(model, str(tmp_path / "f.onnx"))
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "d.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], per_channel=True)
    dyn = _run(onnx.load(str(tmp_path / "d.onnx")), ids, mask)
    rel_dyn = np.abs(dyn - ref)[normal].max() / np.abs(ref[normal]).max()
    assert rel < rel_dyn / 4, (rel, rel_dyn)


def test_smoothing_moves_outlier_channels_into_the_weights():
    absmax = np.array([1.0, 1.0, 64.0])
    w = np.ones((3, 4))
    c = smooth_factors(absmax, [w], alpha=0.5)
    assert c[2] / c[0] == pytest.approx(8.0)  # sqrt of the activation ratio
    c = smooth_factors(np.array([0.0, 1.0]), [np.ones((2, 2))], alpha=0.5)
    assert c.min() >= 1e-2  # a dead channel is clipped, not divided by zero


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    from lugha.config import get_model_config
    from lugha.export.onnx_export import export_onnx
    from lugha.export.specs import SPECS
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size).eval()
    texts = ["a red apple", "mbwa anakimbia uwanjani", "ọmọ náà ń sùn", "kare yana gudu", "grinning face",
             "uso wenye tabasamu", "fuska mai murmushi", "ihu na-amụmụ ọnụ ọchị", "ojú tó ń rẹ́rìn-ín",
             "ubuso obumamatheka", "wajiga dhoola cadeynaya", "a dog runs in the field"]
    ids, mask = tok(texts)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    out = tmp_path_factory.mktemp("text_int8")
    path = export_onnx(SPECS["text_encoder"], model, feeds, out / "text.fp32.onnx").path
    batches = [tuple(t.numpy() for t in tok(texts[i:i + 4])) for i in range(0, len(texts), 4)]
    return tok, texts, path, batches, out


def _embed(path, tok, texts):
    ids, mask = tok(texts)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_tiny_text_tower_per_token_int8(tiny_text):
    tok, texts, path, batches, out = tiny_text
    dst = out / "text.int8.onnx"
    report = quantize_text_per_token(path, dst, batches).to_dict()
    assert report["calibration_texts"] == len(texts) and report["calibration_tokens"] > len(texts)
    assert report["embeddings"]  # the embedding table went int8 too
    m = onnx.load(str(dst))
    ops = {n.op_type for n in m.graph.node}
    assert "MatMulInteger" in ops
    float_mm = [n for n in m.graph.node if n.op_type == "MatMul"
                and n.input[1] in {t.name for t in m.graph.initializer}]
    assert not float_mm  # every linear layer is int8; attention's activation x activation MatMuls stay float
    assert dst.stat().st_size < 0.4 * path.stat().st_size
    ref, got = _embed(path, tok, texts), _embed(dst, tok, texts)
    assert _cos(ref, got).min() > 0.99


def test_a_text_embeds_the_same_whatever_it_is_batched_with(tiny_text):
    """Per-token scales: a text's int8 embedding does not depend on the other texts of its batch (with
    one scale per tensor it does: a long or outlier-heavy neighbour coarsens everyone's grid)."""
    tok, texts, path, batches, out = tiny_text
    dst = out / "text.int8.batch.onnx"
    quantize_text_per_token(path, dst, batches)
    alone = _embed(dst, tok, texts[:1])
    together = _embed(dst, tok, texts[:1] + ["a much longer neighbour sentence " * 3])[:1]
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


def test_per_token_needs_calibration_texts(tiny_text):
    from lugha.export.onnx_quant import QuantizationError

    _, _, path, _, out = tiny_text
    with pytest.raises(QuantizationError, match="calibration texts"):
        quantize_text_per_token(path, out / "x.onnx", [])


def test_smoothed_torch_text_tower_is_the_same_function():
    """The TFLite text int8 path SmoothQuant-s the torch tower before conversion: x W = (x / c)(c W)
    must leave the float embeddings unchanged while the outlier channels move into the weights."""
    from lugha.config import get_model_config
    from lugha.export.text_int8 import smoothed_text_model
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size).eval()
    texts = ["a red apple", "mbwa anakimbia uwanjani", "ọmọ náà ń sùn", "kare yana gudu"]
    ids, mask = tok(texts)
    smoothed = smoothed_text_model(model, [(ids.numpy(), mask.numpy())])
    wrapped = [m for m in smoothed.text_tower.modules() if type(m).__name__ == "SmoothedLinear"]
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.text_tower.modules())
    assert wrapped and len(wrapped) == n_linear
    assert any(not torch.allclose(w.inv_c, torch.ones_like(w.inv_c)) for w in wrapped)
    with torch.no_grad():
        torch.testing.assert_close(smoothed.text_features(ids, mask), model.text_features(ids, mask),
                                   atol=1e-5, rtol=1e-4)
    assert not any(type(m).__name__ == "SmoothedLinear" for m in model.text_tower.modules())  # a copy


def test_fine_two_pass_activations_leave_only_the_weight_error(tiny_text):
    tok, texts, path, batches, out = tiny_text
    coarse, fine = out / "coarse.onnx", out / "fine.onnx"
    quantize_text_per_token(path, coarse, batches)
    report = quantize_text_per_token(path, fine, batches, fine=True).to_dict()
    assert "two-pass" in report["scheme"] and report["smoothquant_alpha"] == 0.0
    count = lambda p: sum(n.op_type == "MatMulInteger" for n in onnx.load(str(p)).graph.node)  # noqa: E731
    assert count(fine) == 2 * count(coarse)
    ref = _embed(path, tok, texts)
    err = lambda p: float((1 - _cos(ref, _embed(p, tok, texts))).mean())  # noqa: E731
    assert err(fine) < err(coarse)


def test_no_unused_initializers_are_left(tiny_text):
    """onnxruntime (and onnxruntime-web, in the page's console) warns about every unused initializer."""
    tok, texts, path, batches, out = tiny_text
    for fine in (False, True):
        dst = out / f"clean{fine}.onnx"
        quantize_text_per_token(path, dst, batches, fine=fine)
        m = onnx.load(str(dst))
        used = {i for n in m.graph.node for i in n.input}
        assert [t.name for t in m.graph.initializer if t.name not in used] == []
