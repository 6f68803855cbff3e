"""The LiteRT backend on real .tflite graphs (converted here with litert-torch from the tiny model):
static batch 1 run row by row, text signatures at two lengths, an NHWC image graph in an NCHW bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lugha.manifest import GoldenSample, GraphSpec, TensorSpec
from lugha.parity import assert_parity
from lugha.runtimes import is_installed
from test_runtimes_bundle import DIM, FP32_TOL, SIZE, TinyWeights, make_tiny_bundle, sample_images

needs_litert = pytest.mark.skipif(not is_installed("litert"), reason="ai-edge-litert not installed")
LENGTHS = (4, 8)


def _writers(w: TinyWeights):
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")

    class Image(torch.nn.Module):  # takes NHWC, as a TFLite-native exporter may choose
        def forward(self, x):
            return x.permute(0, 3, 1, 2).reshape(1, -1) @ torch.from_numpy(w.w_img)

    class Text(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            m = attention_mask.unsqueeze(-1).float()
            pooled = (torch.from_numpy(w.emb)[input_ids] * m).sum(1) / m.sum(1).clamp(min=1.0)
            return pooled @ torch.from_numpy(w.w_txt)

    def write_image(path: Path):  # positional: the converter names the input args_0
        litert_torch.convert(Image().eval(), (torch.zeros(1, SIZE, SIZE, 3),)).export(str(path))

    def write_text(path: Path):  # keyword inputs keep their names; one signature per length
        text, conv = Text().eval(), None
        for n in LENGTHS:
            kw = {"input_ids": torch.zeros(1, n, dtype=torch.long), "attention_mask": torch.ones(1, n, dtype=torch.long)}
            conv = (conv or litert_torch).signature(f"seq{n}", text, sample_kwargs=kw)
        conv.convert().export(str(path))

    img = GraphSpec("image_encoder", "tflite", "fp32", "graphs/image_encoder.fp32.tflite",
                    (TensorSpec("pixel_values", "float32", (1, SIZE, SIZE, 3), "NHWC"),),
                    (TensorSpec("image_embeds", "float32", (1, DIM)),),
                    golden=GoldenSample("golden/image_encoder_tflite_fp32.inputs.npz",
                                        "golden/image_encoder_tflite_fp32.outputs.npz"), tolerance=FP32_TOL)
    txt = GraphSpec("text_encoder", "tflite", "fp32", "graphs/text_encoder.fp32.tflite",
                    (TensorSpec("input_ids", "int64", (1, "seq")), TensorSpec("attention_mask", "int64", (1, "seq"))),
                    (TensorSpec("text_embeds", "float32", (1, DIM)),), quantization={"sequence_lengths": list(LENGTHS)},
                    golden=GoldenSample("golden/text_encoder_tflite_fp32.inputs.npz",
                                        "golden/text_encoder_tflite_fp32.outputs.npz"), tolerance=FP32_TOL)
    return [(img, write_image), (txt, write_text)]


@pytest.fixture(scope="module")
def tflite_bundle(tmp_path_factory) -> Path:
    w = TinyWeights()
    root = make_tiny_bundle(tmp_path_factory.mktemp("tfl") / "bundle", int8=False, extra_graphs=_writers(w))
    return root


@pytest.mark.slow
@needs_litert
def test_litert_matches_onnxruntime_on_the_same_bundle(tflite_bundle):
    from lugha.runtimes import open_bundle

    lite = open_bundle(tflite_bundle, backend="litert", threads=1)
    ort = open_bundle(tflite_bundle, backend="onnxruntime")
    assert (lite.backend, lite.precision) == ("litert", "fp32")
    images = sample_images(4)
    np.testing.assert_allclose(lite.embed_image(images), ort.embed_image(images), atol=1e-5)
    texts = ["a photo of a cat", "mbwa", "fish", "a photo of a dog bird"]
    np.testing.assert_allclose(lite.embed_text(texts), ort.embed_text(texts), atol=1e-5)
    assert lite.classify(text="paka", lang="sw", k=1)[0][0] == "paka"


@pytest.mark.slow
@needs_litert
def test_rows_run_on_the_shortest_signature_that_fits(tflite_bundle):
    from lugha.runtimes import GraphInputError, open_bundle

    b = open_bundle(tflite_bundle, backend="litert")
    session = b.session("text_encoder")
    assert session.sequence_lengths == list(LENGTHS)
    ids, mask = b.tokenizer.encode_batch(["mbwa", "a photo of a cat"])  # 3 and 7 tokens, padded to 8
    picks = [session._pick({"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]}).seq_len for i in range(2)]
    assert picks == [4, 8]
    w = TinyWeights()
    out = b.run_graph("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_embeds"]
    np.testing.assert_allclose(out, w.text(ids, mask), atol=1e-5)
    long_ids = np.full((1, 12), 4, np.int64)
    with pytest.raises(GraphInputError, match="12 tokens do not fit the longest signature"):
        b.run_graph("text_encoder", {"input_ids": long_ids, "attention_mask": np.ones_like(long_ids)})


@pytest.mark.slow
@needs_litert
def test_tflite_golden_parity(tflite_bundle):
    from lugha.runtimes import open_bundle

    b = open_bundle(tflite_bundle, backend="litert")
    for name, spec in b.graphs.items():
        ins = dict(np.load(tflite_bundle / spec.golden.inputs))
        ref = dict(np.load(tflite_bundle / spec.golden.outputs))
        assert all(r.ok for r in assert_parity(ref, b.run_graph(name, ins), spec.tolerance, spec.key))


def test_quantised_io_uses_scale_and_zero_point():
    from lugha.runtimes.litert_backend import _dequantize, _quantize

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = _quantize(np.array([[-100.0, 0.0, 1.0, 100.0]], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [[-128, -3, -1, 127]]  # clipped at the int8 range
    np.testing.assert_allclose(_dequantize(q, detail, "float32"), [[-62.5, 0.0, 1.0, 65.0]])
    ids = _quantize(np.array([[5, 6]], np.int64), {"dtype": np.int32, "quantization": (0.0, 0)})
    assert ids.dtype == np.int32 and ids.tolist() == [[5, 6]]


def test_signature_names_match_by_name_else_by_position():
    from lugha.errors import BundleError
    from lugha.runtimes.litert_backend import _fit_length, _match

    have = {f"args_{i}": {} for i in (0, 1, 10, 2)}
    assert _match(["a", "b", "c", "d"], have, "inputs", "f")["c"] == "args_2"  # 2 before 10
    assert _match(["input_ids", "attention_mask"], {"attention_mask": {}, "input_ids": {}}, "inputs", "f") == {
        "input_ids": "input_ids", "attention_mask": "attention_mask"}
    with pytest.raises(BundleError, match="cannot be matched"):
        _match(["x"], {"a": {}, "b": {}}, "inputs", "g.tflite")
    x = np.array([[7, 8, 9, 0, 0]])
    assert _fit_length(x, 3).tolist() == [[7, 8, 9]] and _fit_length(x, 7).tolist() == [[7, 8, 9, 0, 0, 0, 0]]
