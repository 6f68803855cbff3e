"""End to end: the exporter's bundle of test-tiny (untrained) runs on lugha.runtimes, on ONNX Runtime and
LiteRT, matches its golden outputs, passes device_tests with torch blocked, and benchmarks."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lugha.parity import assert_parity
from lugha.runtimes import is_installed

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
LANGS = ("en", "sw", "yo")


@pytest.fixture(scope="module")
def exported(demo_small, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from lugha.export.pipeline import ExportOptions, export_run
    from lugha.export.source import untrained_source

    formats = ("onnx", "tflite") if is_installed("litert") and _importable("litert_torch") else ("onnx",)
    out = tmp_path_factory.mktemp("e2e") / "bundle"
    source = untrained_source("test-tiny", demo_small, LANGS)
    # allow_drop: an untrained tiny model on a few held-out emoji; its pooled gate cells cannot pass at that n
    export_run(source, out, ExportOptions(formats=formats, precisions=("fp32", "int8"), allow_drop=True,
                                          calib_samples=8, seq_lengths=(8, 16)), say=lambda m: None)
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _golden(root: Path, spec):
    with np.load(root / spec.golden.inputs) as zi, np.load(root / spec.golden.outputs) as zo:
        return {k: zi[k] for k in zi.files}, {k: zo[k] for k in zo.files}


def test_every_graph_matches_golden_on_its_backend(exported):
    from lugha.runtimes import open_bundle

    m = json.loads((exported / "manifest.json").read_text())
    formats = {g["format"] for g in m["graphs"]}
    checked = []
    for backend, fmt in (("onnxruntime", "onnx"), ("litert", "tflite")):
        if fmt not in formats:
            continue
        for precision in ("fp32", "int8"):
            b = open_bundle(exported, backend=backend, precision=precision, threads=1)
            assert {"image_encoder", "text_encoder"} <= set(b.sessions)
            for name, spec in b.graphs.items():
                ins, ref = _golden(exported, spec)
                assert_parity(ref, b.run_graph(name, ins), spec.tolerance, f"{spec.key} on {backend}")
                checked.append(spec.key)
    assert len(checked) >= 4 and len(checked) == len(set(checked))


def _records(manifest: Path, n: int = 6):
    from lugha.records import read_manifest

    rows = [r for r in read_manifest(manifest) if r.lang in LANGS][:n]
    return [r.image_path(manifest.parent) for r in rows], [r.text for r in rows]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())  # rows are L2-normalised


def test_host_path_agrees_across_backends_and_with_torch(exported, demo_small):
    """Real demo images and captions through preprocessing, tokenizer, graphs and normalisation: ONNX
    fp32 = PyTorch eager (the same seeded untrained model) = LiteRT fp32; int8 stays close."""
    from lugha.runtimes import open_bundle

    images, texts = _records(demo_small)
    ort = open_bundle(exported, backend="onnxruntime", precision="fp32")
    img, txt = ort.embed_image(images), ort.embed_text(texts)
    from lugha.export.eager_reference import reference_for

    ref = open_bundle(exported, backend="torch", reference=reference_for("config"), threads=1)
    assert _cos(ref.embed_image(images), img) > 0.99999 and _cos(ref.embed_text(texts), txt) > 0.99999
    int8 = open_bundle(exported, backend="onnxruntime", precision="int8")
    assert _cos(int8.embed_image(images), img) > 0.98 and _cos(int8.embed_text(texts), txt) > 0.98
    if "tflite" in {g.format for g in ort.manifest.graphs} and is_installed("litert"):
        lite = open_bundle(exported, backend="litert", precision="fp32")
        assert _cos(lite.embed_image(images), img) > 0.9999 and _cos(lite.embed_text(texts), txt) > 0.9999
        lite8 = open_bundle(exported, backend="litert", precision="int8")
        assert _cos(lite8.embed_image(images), img) > 0.98 and _cos(lite8.embed_text(texts), txt) > 0.98
    for lang in LANGS:
        labels, _ = ort.label_pack(lang)
        top = ort.classify(image=images[0], lang=lang, k=3)
        assert len(top) == min(3, len(labels)) and all(label in labels for label, _ in top)


DEVICE_RUN = """
import sys
sys.modules["torch"] = None  # a Raspberry Pi has no torch
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_device_tests_pass_on_the_exported_bundle(exported, tmp_path):
    report = tmp_path / "device.json"
    out = subprocess.run([sys.executable, "-c", DEVICE_RUN, str(REPO / "device_tests"), "-q", "-p", "no:cacheprovider",
                          "--bundle", str(exported), "--report", str(report), "--repeats", "3"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "failed" not in out.stdout and re.search(r"\b\d+ passed", out.stdout)
    rep = json.loads(report.read_text())
    n_graphs = len(json.loads((exported / "manifest.json").read_text())["graphs"])
    assert len(rep["parity"]) == n_graphs and all(e["ok"] for e in rep["parity"])


def test_bench_on_the_exported_bundle(exported, tmp_path, capsys):
    from lugha.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", str(exported), "--batch", "1", "--warmup", "1", "--repeats", "3", "--in-process",
                 "--json", str(out), "--html", str(tmp_path / "bench.html")]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["backend"] for r in rows} >= {"onnxruntime"} and all(r["parity"] == "ok" for r in rows)
    html = (tmp_path / "bench.html").read_text()
    assert "t2i_r1 per language" in html or "i2t_r1 per language" in html  # the exporter's metrics, plotted
