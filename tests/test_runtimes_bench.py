"""The benchmark library and `lugha bench`, and device_tests run as a device would (torch blocked)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lugha.cli import main
from lugha.errors import ConfigError
from lugha.export.eager_reference import REFERENCE_FACTORY
from lugha.runtimes.bench import BenchSettings, markdown_report, plan_cases, run_benchmark, table_rows
from test_runtimes_bundle import make_tiny_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bench") / "bundle")


def _case(backend, precision, p50):
    stats = {"p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50, "items_per_s": 1e3 / p50}
    return {"backend": backend, "precision": precision, "cold_start_s": 0.1, "peak_rss_mb": 50.0,
            "graphs": {"image_encoder": {"file": "g.onnx", "size_bytes": 2_000_000, "batches": {"1": stats},
                                         "parity": {"ok": True, "max_abs": 0.0, "min_cosine": 1.0}}}}


def test_ratios_are_against_the_torch_row_of_the_same_graph_and_batch():
    rows = table_rows([_case("onnxruntime", "int8", 2.5), _case("torch", "fp32", 10.0), _case("litert", "int8", 3.0)])
    by = {(r["backend"], r["precision"]): r for r in rows}
    assert rows[0]["backend"] == "torch"  # the reference leads its group
    assert by["onnxruntime", "int8"]["vs_torch"] == pytest.approx(0.25)
    assert by["litert", "int8"]["vs_torch"] == pytest.approx(0.30)
    assert by["torch", "fp32"]["size_mb"] is None and by["litert", "int8"]["size_mb"] == pytest.approx(2.0)
    assert table_rows([_case("onnxruntime", "int8", 2.5)])[0]["vs_torch"] is None  # no reference, no ratio


def test_plan_lists_cases_and_says_why_others_are_skipped(tiny, monkeypatch):
    cases, skipped = plan_cases(tiny, BenchSettings(backends=("onnxruntime", "litert", "coreml")))
    assert cases == [("onnxruntime", "int8"), ("onnxruntime", "fp32")]
    reasons = {s["backend"]: s["reason"] for s in skipped}
    assert "no tflite graphs" in reasons["litert"] and "unknown backend" in reasons["coreml"]
    cases, _ = plan_cases(tiny, BenchSettings(backends=("onnxruntime",), precisions=("fp32",)))
    assert cases == [("onnxruntime", "fp32")]
    from lugha.runtimes import backends

    backends._probe.cache_clear()
    monkeypatch.setitem(sys.modules, "torch", None)
    try:
        _, skipped = plan_cases(tiny, BenchSettings(reference="config", reference_factory=REFERENCE_FACTORY))
        assert any(s["backend"] == "torch" and "pip install lugha[train]" in s["reason"] for s in skipped)
        with pytest.raises(ConfigError, match="module:function"):  # a reference the runtimes cannot open
            plan_cases(tiny, BenchSettings(reference="config"))
    finally:
        backends._probe.cache_clear()


def test_in_process_benchmark_times_every_graph_and_batch(tiny):
    report = run_benchmark(tiny, BenchSettings(batches=(1, 3), warmup=1, repeats=3, isolate=False))
    assert [(c["backend"], c["precision"]) for c in report["cases"]] == [("onnxruntime", "int8"), ("onnxruntime", "fp32")]
    rows = report["rows"]
    assert len(rows) == 2 * 2 * 2  # graphs x batches x precisions
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["parity"] == "ok" and r["vs_torch"] is None
        assert r["items_per_s"] > 0 and r["cold_start_s"] > 0
    sizes = {f"graphs/{r['graph']}.{r['precision']}.onnx": r["size_mb"] for r in rows}
    for path, mb in sizes.items():
        assert mb == pytest.approx(report["sizes"][path] / 1e6)
    text = markdown_report(report)
    assert "| image_encoder" in text and "no PyTorch reference column" in text


def test_isolated_worker_reports_its_own_memory(tiny):
    report = run_benchmark(tiny, BenchSettings(backends=("onnxruntime",), precisions=("fp32",), batches=(1,),
                                               warmup=0, repeats=2))
    (case,) = report["cases"]
    assert case["providers"] == ["CPUExecutionProvider"]
    # a fresh interpreter with numpy and onnxruntime: tens of MB, and more after loading than before
    assert 5 < case["rss_before_mb"] <= case["peak_rss_mb"] < 2000


def test_cli_writes_json_and_self_contained_html(tiny, tmp_path, capsys):
    out_json, out_html = tmp_path / "b.json", tmp_path / "b.html"
    rc = main(["bench", str(tiny), "--batch", "1,2", "--warmup", "0", "--repeats", "2", "--in-process",
               "--json", str(out_json), "--html", str(out_html)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| text_encoder\s+\| 2\s+\| onnxruntime \| int8", printed)
    report = json.loads(out_json.read_text())
    assert report["settings"]["batches"] == [1, 2] and len(report["rows"]) == 8
    html = out_html.read_text()
    assert html.count("<svg") == 3  # two latency plots, one size-vs-accuracy plot
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "R@1 per language" in html
    assert main(["bench", str(tiny), "--batch", "0"]) == 1  # typed error, exit 1


@pytest.mark.slow
def test_torch_config_reference_gives_ratios(tiny):
    pytest.importorskip("torch")
    report = run_benchmark(tiny, BenchSettings(backends=("onnxruntime",), precisions=("int8",), batches=(1,),
                                               warmup=1, repeats=3, reference="config", isolate=False,
                                               reference_factory=REFERENCE_FACTORY))
    rows = {(r["graph"], r["backend"]): r for r in report["rows"]}
    ref = rows["image_encoder", "torch"]
    assert ref["vs_torch"] == pytest.approx(1.0) and ref["parity"] == "n/a"  # untrained: no verdict
    ort = rows["image_encoder", "onnxruntime"]
    assert ort["vs_torch"] == pytest.approx(ort["p50_ms"] / ref["p50_ms"])



@pytest.mark.slow
def test_cli_reference_runs_in_its_own_worker(tiny, tmp_path):
    """--reference crosses the process boundary by name: the isolated worker rebuilds the PyTorch
    reference from lugha.export, which the runtimes never import."""
    pytest.importorskip("torch")
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny), "--backends", "onnxruntime", "--precisions", "fp32", "--batch", "1",
                 "--warmup", "0", "--repeats", "2", "--reference", "config", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(c["backend"], c["precision"]) for c in report["cases"]] == [("torch", "fp32"), ("onnxruntime", "fp32")]
    assert not report["skipped"] and {r["parity"] for r in report["rows"] if r["backend"] == "torch"} == {"n/a"}

DEVICE_RUN = """
import sys
sys.modules["torch"] = None  # a Raspberry Pi has no torch
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _device_tests(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DEVICE_RUN, str(REPO / "device_tests"), "-q", "-p", "no:cacheprovider",
                           *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_device_tests_pass_on_a_good_bundle_without_torch(tiny, tmp_path):
    out = _device_tests("--bundle", str(tiny), "--report", str(tmp_path / "dev.json"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\b14 passed\b", out.stdout), out.stdout[-1500:]
    rep = json.loads((tmp_path / "dev.json").read_text())
    assert {e["graph"] for e in rep["latency"]} == {g for g in ("image_encoder/onnx/fp32", "image_encoder/onnx/int8",
                                                                 "text_encoder/onnx/fp32", "text_encoder/onnx/int8")}
    assert all(e["p50_ms"] > 0 and e["peak_rss_after_mb"] > 0 for e in rep["latency"])
    assert all(e["ok"] for e in rep["parity"]) and len(rep["parity"]) == 4
    assert rep["model"] == "test-tiny" and rep["engines"]["onnxruntime"]


def test_device_tests_skip_without_bundle_and_fail_on_tampering(tiny, tmp_path):
    out = _device_tests()
    assert out.returncode == 0 and "no bundle given: run `pytest device_tests --bundle PATH`" in out.stdout
    assert " passed" not in out.stdout
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    golden = bad / "golden" / "image_encoder_onnx_fp32.outputs.npz"
    import numpy as np

    with np.load(golden) as z:
        data = {k: z[k] for k in z.files}
    data["image_embeds"] = data["image_embeds"] + 0.01
    np.savez(golden, **data)  # a changed reference: the hash test and the parity test must both see it
    out = _device_tests("--bundle", str(bad))
    assert out.returncode == 1 and re.search(r"\b2 failed, 12 passed\b", out.stdout), out.stdout[-1500:]
    assert "FAILED device_tests/test_hashes.py::test_every_file_matches_its_hash" in out.stdout
    assert "FAILED device_tests/test_parity.py::test_graph_matches_golden[onnxruntime-image_encoder-onnx-fp32]" in out.stdout
    assert "image_encoder_onnx_fp32.outputs.npz: SHA-256" in out.stdout
    assert "image_encoder/onnx/fp32 on onnxruntime:image_embeds: max abs diff" in out.stdout
