"""The GPU benchmark scripts of device_tests/ run end to end (tiny towers, CPU): a GPU session has 15
minutes, so a script that breaks there costs the figures. Not timed: only the reports' shape and sense."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "device_tests" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_training_benchmark_reports_every_mode_and_ratio(tmp_path, demo_small):
    out = tmp_path / "bench.json"
    rc = _script("bench_training").main([
        "--tiny", "--device", "cpu", "--no-compile", "--batch", "4", "--steps", "1", "--warmup", "1",
        "--repeats", "2", "--workers", "0", "--seq-len", "8", "--data", str(demo_small),
        "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["precision"] == "fp32" and report["batch"] == 4
    rows = report["rows"]
    assert set(rows) == {"full_eager", "cached_features", "full_compiled", "cache_loader", "real_replay",
                         "real_loader", "frozen_towers"}
    assert all(r["samples_per_s"] > 0 and len(r["samples_per_s_runs"]) == 2 for r in rows.values())
    # frozen towers and cached features train only the projections (+ logit scale)
    assert rows["frozen_towers"]["trainable_params"] == rows["cached_features"]["trainable_params"] \
        < rows["full_eager"]["trainable_params"]
    assert rows["full_eager"]["x_full_eager"] == 1.0
    assert set(report["ratios"]) >= {"full_compiled_vs_eager", "cached_vs_full_eager", "real_loader_vs_synthetic",
                                     "real_loader_vs_replayed_batches", "cache_loader_vs_synthetic"}


@pytest.mark.slow
def test_cuda_inference_benchmark_runs_on_cpu_and_says_what_it_lacks(tmp_path):
    out = tmp_path / "cuda.json"
    rc = _script("bench_cuda_inference").main(["--tiny", "--device", "cpu", "--batch", "1,2", "--warmup", "1",
                                               "--repeats", "3", "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0
    graphs = {(r["graph"], r["backend"], r["batch"]) for r in report["rows"]}
    for g in ("image_encoder", "text_encoder"):
        assert (g, "torch-cpu", 1) in graphs and (g, "ort-cpu", 2) in graphs
    assert any("CUDAExecutionProvider" in n for n in report["notes"])  # said plainly, not skipped silently
