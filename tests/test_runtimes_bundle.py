"""lugha.runtimes on a tiny bundle built here with onnx.helper, checked against numpy reference maths.

The bundle follows the contract (kit/manifest.py): image_encoder = Flatten + MatMul, text_encoder =
Gather + masked mean + MatMul, a WordLevel tokenizer.json, golden npz files, label packs, fp32 graphs and
an int8 twin from onnxruntime's dynamic quantiser. Other test_runtimes_* modules import the builder.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lugha.config import get_model_config
from lugha.errors import BundleError, ChecksumError, ConfigError, MissingDependencyError
from lugha.manifest import BundleManifest, GoldenSample, GraphSpec, TensorSpec, Tolerance, write_manifest
from lugha.parity import assert_parity
from lugha.preprocess import HALF_MEAN, HALF_STD, PreprocessSpec, preprocess_batch
from lugha.tokenizer import TokenizerSpec

SIZE, HIDDEN, DIM = 8, 6, 4
VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "cat", "dog", "bird", "fish", "a", "photo", "of", "paka", "mbwa", "ndege"]
LABELS = {"en": ["cat", "dog", "bird"], "sw": ["paka", "mbwa", "ndege"]}
FP32_TOL = Tolerance(max_abs=1e-5, min_cosine=0.99999)
INT8_TOL = Tolerance(max_abs=0.05, min_cosine=0.99)


class TinyWeights:
    """The tiny model's weights and its numpy reference forward passes."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w_img = rng.normal(0, 0.2, (3 * SIZE * SIZE, DIM)).astype(np.float32)
        self.emb = rng.normal(0, 1.0, (len(VOCAB), HIDDEN)).astype(np.float32)
        self.w_txt = rng.normal(0, 0.5, (HIDDEN, DIM)).astype(np.float32)

    def image(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.reshape(pixels.shape[0], -1) @ self.w_img

    def text(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.float32)[..., None]
        pooled = (self.emb[ids] * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return pooled @ self.w_txt


def _onnx_graphs(w: TinyWeights, folder: Path) -> tuple[Path, Path]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(graph, name):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = folder / name
        onnx.save(model, str(path))
        return path

    img = helper.make_graph(
        [helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w_img"], ["image_embeds"])],
        "image_encoder",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(w.w_img, "w_img")])
    txt = helper.make_graph(
        [helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
         helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
         helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
         helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
         helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
         helper.make_node("Max", ["count", "one"], ["count1"]),
         helper.make_node("Div", ["summed", "count1"], ["pooled"]),
         helper.make_node("MatMul", ["pooled", "w_txt"], ["text_embeds"])],
        "text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(w.emb, "emb"), numpy_helper.from_array(w.w_txt, "w_txt"),
         numpy_helper.from_array(np.array([2], np.int64), "axis2"),
         numpy_helper.from_array(np.array([1], np.int64), "axis1"),
         numpy_helper.from_array(np.array([1.0], np.float32), "one")])
    return save(img, "image_encoder.fp32.onnx"), save(txt, "text_encoder.fp32.onnx")


def _tokenizer_json(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tok.save(str(path))


def _spec(name: str, fmt: str, precision: str, tol: Tolerance) -> GraphSpec:
    key = f"{name}_{fmt}_{precision}"
    if name == "image_encoder":
        ins = (TensorSpec("pixel_values", "float32", ("batch", 3, SIZE, SIZE), "NCHW"),)
        outs = (TensorSpec("image_embeds", "float32", ("batch", DIM)),)
    else:
        ins = (TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq")))
        outs = (TensorSpec("text_embeds", "float32", ("batch", DIM)),)
    ext = "tflite" if fmt == "tflite" else "onnx"
    return GraphSpec(name, fmt, precision, f"graphs/{name}.{precision}.{ext}", ins, outs,
                     golden=GoldenSample(f"golden/{key}.inputs.npz", f"golden/{key}.outputs.npz"), tolerance=tol)


def sample_images(n: int = 3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8) for i in range(n)]


def golden_inputs(w: TinyWeights, tok_spec: TokenizerSpec, root: Path):
    from lugha.tokenizer import load_tokenizer

    preprocess = PreprocessSpec(size=SIZE, mean=HALF_MEAN, std=HALF_STD)
    pixels = preprocess_batch(sample_images(), preprocess)
    ids, mask = load_tokenizer(root / "tokenizer.json", tok_spec).encode_batch(["a photo of a cat", "mbwa", "fish fish"])
    return preprocess, pixels, ids, mask


def make_tiny_bundle(root: Path, *, int8: bool = True, extra_graphs=(), seed: int = 0) -> Path:
    """Write the tiny bundle under ``root`` and return it. ``extra_graphs``: ``(GraphSpec, writer)`` pairs
    where ``writer(path)`` creates the graph file (used by the TFLite tests)."""
    w = TinyWeights(seed)
    for sub in ("graphs", "golden", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    img_path, txt_path = _onnx_graphs(w, root / "graphs")
    _tokenizer_json(root / "tokenizer.json")
    tok_spec = TokenizerSpec(max_length=8)
    preprocess, pixels, ids, mask = golden_inputs(w, tok_spec, root)
    specs = [_spec("image_encoder", "onnx", "fp32", FP32_TOL), _spec("text_encoder", "onnx", "fp32", FP32_TOL)]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for src in (img_path, txt_path):
            quantize_dynamic(str(src), str(src.with_name(src.name.replace("fp32", "int8"))), weight_type=QuantType.QInt8)
        specs += [_spec("image_encoder", "onnx", "int8", INT8_TOL), _spec("text_encoder", "onnx", "int8", INT8_TOL)]
    for spec, writer in extra_graphs:
        writer(root / spec.file)
        specs.append(spec)
    for spec in specs:
        if spec.name == "image_encoder":
            nhwc = spec.inputs[0].layout == "NHWC"  # golden inputs in the graph's own layout
            ins = {"pixel_values": np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)) if nhwc else pixels}
            outs = {"image_embeds": w.image(pixels)}
        else:
            ins, outs = {"input_ids": ids, "attention_mask": mask}, {"text_embeds": w.text(ids, mask)}
        np.savez(root / spec.golden.inputs, **ins)
        np.savez(root / spec.golden.outputs, **outs)
    for lang, labels in LABELS.items():
        from lugha.tokenizer import load_tokenizer

        lids, lmask = load_tokenizer(root / "tokenizer.json", tok_spec).encode_batch(labels)
        e = w.text(lids, lmask)
        np.savez(root / "labels" / f"{lang}.npz", labels=np.array(labels), embeds=e / np.linalg.norm(e, axis=1, keepdims=True))
    (root / "MODEL_CARD.md").write_text("# tiny test bundle\n", encoding="utf-8")
    cfg = get_model_config("test-tiny").replace(embed_dim=DIM, preprocess=preprocess)
    manifest = BundleManifest(model=cfg, graphs=tuple(specs), tokenizer=tok_spec,
                              languages=tuple(LABELS), metrics={"fp32": {"en": {"R@1": 0.5}, "sw": {"R@1": 0.4}},
                                                                "int8": {"en": {"R@1": 0.48}, "sw": {"R@1": 0.39}}})
    files = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    from lugha.manifest import FileEntry

    write_manifest(root, manifest.replace(files=tuple(FileEntry(f) for f in files)))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


# --- tests -----------------------------------------------------------------------------------------------

def test_embeddings_match_numpy_reference_and_are_normalised(tiny):
    from lugha.runtimes import open_bundle

    w = TinyWeights()
    images = sample_images()
    b = open_bundle(tiny, backend="onnxruntime", precision="fp32", threads=1)
    assert (b.backend, b.precision) == ("onnxruntime", "fp32") and sorted(b.sessions) == ["image_encoder", "text_encoder"]
    emb = b.embed_image(images)
    ref = w.image(preprocess_batch(images, b.manifest.preprocess))
    np.testing.assert_allclose(emb, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb.dtype == np.float32 and emb.shape == (3, DIM)
    # one image (an array, a path or a PIL image) gives one row, the same row
    from PIL import Image

    Image.fromarray(images[0]).save(tiny.parent / "one.png")
    for one in (images[0], tiny.parent / "one.png", str(tiny.parent / "one.png"), Image.fromarray(images[0])):
        np.testing.assert_allclose(b.embed_image(one), emb[:1], atol=1e-6)
    t = b.embed_text(["cat", "a photo of a dog"])
    ids, mask = b.tokenizer.encode_batch(["cat", "a photo of a dog"])
    r = w.text(ids, mask)
    np.testing.assert_allclose(t, r / np.linalg.norm(r, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(b.embed_text("cat"), t[:1], atol=1e-6)


def test_auto_picks_int8_and_stays_close_to_fp32(tiny):
    from lugha.runtimes import open_bundle

    b8, b32 = open_bundle(tiny), open_bundle(tiny, precision="fp32")
    assert (b8.backend, b8.precision) == ("onnxruntime", "int8")
    texts = ["a photo of a cat", "dog", "bird fish"]
    cos = (b8.embed_text(texts) * b32.embed_text(texts)).sum(1)
    assert cos.min() > 0.99
    assert not np.array_equal(b8.embed_text(texts), b32.embed_text(texts))  # really another graph


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_run_graph_reproduces_golden_outputs(tiny, precision):
    from lugha.runtimes import open_bundle

    b = open_bundle(tiny, precision=precision)
    for name, spec in b.graphs.items():
        ins = dict(np.load(tiny / spec.golden.inputs))
        ref = dict(np.load(tiny / spec.golden.outputs))
        results = assert_parity(ref, b.run_graph(name, ins), spec.tolerance, spec.key)
        assert all(r.ok for r in results)
        if precision == "fp32":
            assert max(r.max_abs for r in results) < 1e-5


def test_classify_with_label_packs(tiny):
    from lugha.runtimes import open_bundle

    b = open_bundle(tiny, precision="fp32")
    top = b.classify(text="cat", lang="en", k=2)
    assert top[0][0] == "cat" and top[0][1] == pytest.approx(1.0, abs=1e-5) and len(top) == 2
    assert b.classify(text="paka", lang="sw", k=1)[0][0] == "paka"
    img = sample_images(1, seed=7)[0]
    labels, embeds = b.label_pack("en")
    expected = np.argsort(-(embeds @ b.embed_image(img)[0]))
    assert [label for label, _ in b.classify(image=img, lang="en", k=3)] == [labels[i] for i in expected]
    assert b.label_languages() == ["en", "sw"]
    with pytest.raises(BundleError, match="no label pack for language 'yo'.*en, sw"):
        b.classify(text="cat", lang="yo")
    with pytest.raises(ConfigError, match="no fusion_head"):
        b.classify(image=img, text="cat")


def test_search_through_bundle(tiny):
    from lugha.runtimes import EmbeddingIndex, open_bundle

    b = open_bundle(tiny, precision="fp32")
    texts = ["cat", "dog", "bird", "fish"]
    index = EmbeddingIndex.from_embeddings(b.embed_text(texts), ids=texts, precision="int8")
    scores, ids = b.search(b.embed_text(["dog", "fish"]), index, k=2)
    assert list(ids[:, 0]) == ["dog", "fish"] and scores.shape == (2, 2)


def test_missing_precision_and_format_list_what_the_bundle_has(tiny, tmp_path):
    from lugha.runtimes import GraphNotInBundleError, open_bundle

    with pytest.raises(GraphNotInBundleError, match="no onnx/fp16 graphs; it has: onnx/fp32, onnx/int8"):
        open_bundle(tiny, precision="fp16")
    with pytest.raises(GraphNotInBundleError, match="no tflite graphs for backend 'litert'.*onnx/fp32, onnx/int8"):
        open_bundle(tiny, backend="litert")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        open_bundle(tiny, backend="tensorrt")
    with pytest.raises(ConfigError, match="reference"):
        open_bundle(tiny, backend="torch")


def test_missing_engine_names_the_pip_extra(tiny, monkeypatch):
    from lugha.runtimes import BackendNotInstalledError, backends
    from lugha.runtimes.bundle import open_bundle

    backends._probe.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    try:
        with pytest.raises(BackendNotInstalledError, match="pip install onnxruntime") as e:
            open_bundle(tiny, backend="onnxruntime")
        assert isinstance(e.value, MissingDependencyError)
        with pytest.raises(BundleError, match="no installed backend can run this bundle"):
            open_bundle(tiny)  # auto: onnx graphs only, and no onnxruntime
    finally:
        backends._probe.cache_clear()


def test_tampered_graph_is_refused(tiny, tmp_path):
    import shutil

    from lugha.runtimes import open_bundle

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    graph = copy / "graphs" / "text_encoder.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes: only the hash can tell
    graph.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="text_encoder.fp32.onnx: SHA-256"):
        open_bundle(copy, precision="fp32")
    assert open_bundle(copy, precision="int8", verify=False).precision == "int8"  # an explicit opt-out


def test_zipped_bundle_opens_and_cleans_up(tiny, tmp_path):
    from lugha.runtimes import open_bundle

    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(tiny.rglob("*")):
            if p.is_file():
                z.write(p, "bundle/" + p.relative_to(tiny).as_posix())
    with open_bundle(archive, precision="fp32") as b:
        extracted = b.root
        assert (extracted / "manifest.json").is_file()
        np.testing.assert_allclose(b.embed_text(["cat"]), open_bundle(tiny, precision="fp32").embed_text(["cat"]))
    assert not extracted.exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        open_bundle(evil)


def test_wrong_input_names_are_a_typed_error(tiny):
    from lugha.runtimes import GraphInputError, open_bundle

    b = open_bundle(tiny, precision="fp32")
    with pytest.raises(GraphInputError, match=r"image_encoder/onnx/fp32: inputs \['pixels'\]"):
        b.run_graph("image_encoder", {"pixels": np.zeros((1, 3, SIZE, SIZE), np.float32)})


TORCH_BLOCKED = """
import sys, json
sys.modules["torch"] = None
import numpy as np
from lugha.runtimes import open_bundle
b = open_bundle(sys.argv[1])
e = b.embed_text(["a photo of a cat"])
print(json.dumps({"backend": b.backend, "precision": b.precision, "norm": float(np.linalg.norm(e)),
                  "torch": [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None]}))
"""


def test_runs_with_torch_blocked(tiny):
    out = subprocess.run([sys.executable, "-c", TORCH_BLOCKED, str(tiny)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["backend"] == "onnxruntime" and got["precision"] == "int8" and got["torch"] == []
    assert got["norm"] == pytest.approx(1.0, abs=1e-5)


def test_tflite_runtime_is_refused_for_int8_text_graphs_before_loading_anything(tmp_path, monkeypatch):
    """tflite-runtime 2.14 returns wrong (zero) text embeddings on the dynamic-range int8 text graph: the
    runtime says so instead of serving them; its image graphs and fp32 text stay allowed; auto skips int8."""
    from lugha.runtimes import backends as be
    from lugha.runtimes import bundle as bm

    tol = Tolerance(max_abs=1e-3, min_cosine=0.99)
    text8, img8 = _spec("text_encoder", "tflite", "int8", tol), _spec("image_encoder", "tflite", "int8", tol)
    text32 = _spec("text_encoder", "tflite", "fp32", tol)
    assert "ai-edge-litert" in be.unsupported_reason("tflite", text8)
    assert be.unsupported_reason("litert", text8) is None and be.unsupported_reason("tflite", img8) is None
    assert be.unsupported_reason("tflite", text32) is None
    with pytest.raises(be.UnsupportedGraphError, match="text_encoder.*'tflite'.*zero"):
        bm.load_graph_session(tmp_path, text8, "tflite")  # no file needed: refused before it is read
    manifest = type("M", (), {"graphs": [text8, img8, text32, _spec("image_encoder", "tflite", "fp32", tol)]})()
    monkeypatch.setattr(bm, "is_installed", lambda name: name == "tflite")
    assert bm._choose(manifest, "tflite", "auto") == ("tflite", "fp32")
    assert bm._choose(manifest, "auto", "auto") == ("tflite", "fp32")
