"""`lugha export` end to end on a tiny trained run: a bundle that verifies (hashes and signature), golden
samples that reproduce, label packs; and a failed gate that exits non-zero and leaves no bundle."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lugha.cli import main  # noqa: E402
from lugha.export.gates import accuracy_gate, summarize_failures  # noqa: E402
from lugha.manifest import load_bundle_manifest  # noqa: E402
from lugha.parity import assert_parity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_accuracy_gate_names_the_language_that_drops():
    ref = {"yo": {"i2t_r1": 0.50, "t2i_r1": 0.40}, "sw": {"i2t_r1": 0.30, "t2i_r1": 0.30}}
    cand = {"onnx/int8": {"yo": {"i2t_r1": 0.48, "t2i_r1": 0.40}, "sw": {"i2t_r1": 0.30, "t2i_r1": 0.295}}}
    rows = accuracy_gate(ref, cand, max_drop=1.0)
    bad = [r for r in rows if not r.ok]
    assert [(r.lang, r.metric) for r in bad] == [("yo", "i2t_r1")] and bad[0].drop_points == pytest.approx(2.0)
    assert all(r.ok for r in accuracy_gate(ref, cand, max_drop=2.0))
    assert "[yo] i2t_r1" in summarize_failures([], rows, 1.0)[0]


def test_accuracy_gate_says_how_many_items_a_drop_is():
    ref = {"ta": {"i2t_r1": 40 / 149, "t2i_r1": 30 / 149, "n_images": 149.0, "n_texts": 149.0}}
    cand = {"tflite/int8": {"ta": {"i2t_r1": 38 / 149, "t2i_r1": 30 / 149}}}
    rows = accuracy_gate(ref, cand, max_drop=1.0)
    assert [(r.metric, r.items, r.ok) for r in rows] == [("i2t_r1", 149, False), ("t2i_r1", 149, True)]
    assert rows[0].resolution() == "2 of 149 images; one = 0.67 points"
    assert summarize_failures([], rows, 1.0) == [
        "accuracy tflite/int8 [ta] i2t_r1: 25.5 vs 26.8 fp32 = -1.3 points (max 1.0; 2 of 149 images; one = 0.67 points)"]
    labels = accuracy_gate({"hi": {"label_acc": 48 / 149, "n_labelled": 149}}, {"x": {"hi": {"label_acc": 45 / 149}}}, 1.0)
    assert labels[0].items == 149 and labels[0].resolution().startswith("3 of 149 images")
    no_counts = accuracy_gate({"ta": {"i2t_r1": 0.5}}, {"x": {"ta": {"i2t_r1": 0.4}}}, 1.0)
    assert no_counts[0].items == 0 and no_counts[0].resolution() == "" and "of" not in summarize_failures([], no_counts, 1.0)[0]


@pytest.fixture(scope="module")
def tiny_run(demo_small, tmp_path_factory):
    from lugha.training.train_config import load_train_config
    from lugha.training.trainer import train

    root = tmp_path_factory.mktemp("exportrun")
    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml", [
        f"data.manifest={demo_small}", f"data.cache_dir={root / 'cache'}", "data.languages=[en, sw, yo]",
        "data.batch_size=16", "loop.epochs=2", "model_overrides.adapter.kind=projection"])
    train(cfg, root / "run", show_progress=False, say=lambda m: None)
    return root / "run"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pytest.importorskip("cryptography")
    from lugha.export.signing import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "key.pem", d / "pub.pem")
    return d / "key.pem", d / "pub.pem"


@pytest.mark.slow
def test_export_writes_a_bundle_that_verifies_and_reproduces(tiny_run, keys, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["export", str(tiny_run), "--out", str(out), "--precision", "fp32,fp16,int8", "--max-drop", "100",
               "--zip", "--sign", str(keys[0]), "--calib-samples", "16", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"]
    m = load_bundle_manifest(out)  # every SHA-256 checked
    keys_ = {g.key for g in m.graphs}
    assert keys_ == {f"{n}/onnx/{p}" for n in ("image_encoder", "text_encoder") for p in ("fp32", "fp16", "int8")}
    assert m.tokenizer is not None and (out / m.tokenizer.file).is_file()
    assert set(m.label_packs) == set(m.languages) == {"en", "sw", "yo"}
    with np.load(out / m.label_packs["sw"]) as pack:
        assert pack["embeds"].shape == (len(pack["labels"]), m.model.embed_dim)
        assert np.allclose(np.linalg.norm(pack["embeds"], axis=1), 1.0, atol=1e-5)
    assert {"torch/fp32", "onnx/fp32", "onnx/int8"} <= set(m.metrics)
    assert "## Metrics per language and precision" in (out / "MODEL_CARD.md").read_text()
    # golden samples reproduce with a fresh onnxruntime session, within each graph's own tolerance
    from lugha.export.bundle_writer import read_golden
    from lugha.export.graph_runners import onnx_runner

    for g in m.graphs:
        inputs, outputs = read_golden(out, g.golden)
        assert_parity(outputs, onnx_runner(out / g.file)(inputs), g.tolerance, g.key)
    assert main(["bundle", "verify", str(out), "--pubkey", str(keys[1])]) == 0
    with zipfile.ZipFile(tmp_path / "bundle.zip") as z:
        assert "manifest.json" in z.namelist() and "graphs/text_encoder.int8.onnx" in z.namelist()
    # a changed manifest no longer matches its signature
    data = json.loads((out / "manifest.json").read_text())
    data["languages"] = ["en"]
    (out / "manifest.json").write_text(json.dumps(data))
    assert main(["bundle", "verify", str(out), "--pubkey", str(keys[1])]) == 1


@pytest.mark.slow
def test_a_failed_gate_exits_nonzero_and_leaves_no_bundle(tiny_run, tmp_path, monkeypatch, capsys):
    from onnx import numpy_helper

    from lugha.export import text_int8

    real = text_int8.quantize_text_per_token  # the default text int8

    def corrupted(src, dst, *args, **kwargs):  # int8 text graph whose embedding rows have flipped signs
        report = real(src, dst, *args, **kwargs)
        m = onnx.load(str(dst))
        for t in m.graph.initializer:
            if t.name.endswith("_row_scale"):
                t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
        onnx.save(m, str(dst))
        return report

    monkeypatch.setattr(text_int8, "quantize_text_per_token", corrupted)
    out = tmp_path / "bundle"
    rc = main(["export", str(tiny_run), "--out", str(out), "--precision", "int8", "--allow-drop"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "text_encoder/onnx/int8" in err and "FAILED" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_export_refuses_an_existing_bundle_folder(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_run), "--out", str(out)]) == 1
    assert (out / "keep.txt").read_text() == "mine"
