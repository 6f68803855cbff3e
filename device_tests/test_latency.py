"""Latency and memory of every graph on every installed backend at batch 1, recorded into --report.

Not a gate: a board's speed is what it is. The test fails only if a graph cannot run repeatedly."""
from __future__ import annotations

import time

import numpy as np
import pytest


def test_graph_latency(bundle_dir, manifest, backend, graph_key, threads, report, request):
    from lugha.runtimes.bench import bench_inputs, peak_rss_mb
    from lugha.runtimes.bundle import load_graph_session

    name, fmt, precision = graph_key.split("/")
    spec = manifest.graph(name, fmt, precision)
    repeats = request.config.getoption("repeats")
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    session = load_graph_session(bundle_dir, spec, backend, threads)
    load_s = time.perf_counter() - t0
    feeds = bench_inputs(bundle_dir, spec, batch=1)
    t0 = time.perf_counter()
    first = session.run(feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(3):
        session.run(feeds)
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = session.run(feeds)
        ms.append((time.perf_counter() - t0) * 1e3)
    for k, v in out.items():  # repeated runs are deterministic
        np.testing.assert_array_equal(v, first[k], err_msg=f"{graph_key} on {backend}: {k} changed between runs")
    a = np.asarray(ms)
    entry = {"backend": backend, "graph": graph_key, "batch": 1, "threads": threads, "repeats": repeats,
             "load_s": load_s, "first_ms": first_ms, "p50_ms": float(np.percentile(a, 50)),
             "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
             "peak_rss_before_mb": rss_before, "peak_rss_after_mb": peak_rss_mb()}
    report["latency"].append(entry)
    assert np.isfinite(a).all() and a.min() > 0
    if not all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f"):
        pytest.fail(f"{graph_key} on {backend}: non-finite outputs")
