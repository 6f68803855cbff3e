"""The README's quickstart figures: run the main job as a user does, then read what it wrote.

  python benchmarks/quickstart_figures.py --json benchmarks/quickstart.json      # runs `lugha quickstart`
  python benchmarks/quickstart_figures.py --from lugha-quickstart --json ...     # reads a finished one

Running, it starts `lugha quickstart` (default output folder unless --out) with an empty LUGHA_HOME, so
nothing is cached (no feature cache, no materialised e5-small), and records its wall time and the peak
RSS of its largest process. Then it reads the run's own files: ``quickstart.json`` (each step's command,
seconds, exit status), the bundle's manifest (graph sizes, per-precision bundle sizes, parity rows, the
accuracy gate's decisions), ``device_report.json`` and ``bench.json`` (batch-1 latency per backend and
precision against PyTorch eager fp32 timed in the same run, cold start, peak RSS). With --bench-runs N
(default 2) it benchmarks the bundle N-1 more times, back to back, so every latency comes with its spread
and a median over runs. One JSON out; a benchmark, not a test (about 10 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lugha.reports import write_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_sizes import bundle_sizes  # noqa: E402 (one size rule for every benchmark)


def run_quickstart(out: Path | None, smoke: bool) -> dict:
    """`lugha quickstart` in a fresh process with an empty LUGHA_HOME: wall seconds, peak RSS, exit code."""
    with tempfile.TemporaryDirectory(prefix="lugha-home-") as home:
        cmd = [sys.executable, "-m", "lugha.cli", "quickstart"] + (["--out", str(out)] if out else []) + \
              (["--smoke"] if smoke else [])
        t0 = time.monotonic()
        rc = subprocess.call(cmd, env={**os.environ, "LUGHA_HOME": home})
        wall = time.monotonic() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest waited-for descendant
    return {"command": " ".join(cmd[2:]).replace("lugha.cli", "lugha", 1), "exit": rc, "wall_seconds": round(wall, 1),
            "peak_rss_gb": round(peak_kb / 1e6, 2), "lugha_home": "empty (fresh temporary folder)"}


def bench_once(bundle: Path, run: Path, out: Path) -> dict:
    """The quickstart's own bench command (batch 1, 1 thread, PyTorch reference from the run)."""
    cmd = [sys.executable, "-m", "lugha.cli", "bench", str(bundle), "--reference", str(run), "--threads", "1",
           "--batch", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text(encoding="utf-8"))


def latency_rows(report: dict) -> dict[str, dict]:
    """"graph/backend/precision" -> p50 ms, × torch, cold start, peak RSS, size (batch 1)."""
    rows = {}
    for r in report["rows"]:
        if r["batch"] != 1:
            continue
        rows[f"{r['graph']}/{r['backend']}/{r['precision']}"] = {
            k: r[k] for k in ("p50_ms", "vs_torch", "cold_start_s", "peak_rss_mb", "size_mb", "parity")}
    return rows


def summarize_bench(reports: list[dict]) -> dict:
    """Each case's p50 in every run, their median, and the median ratio to torch of the same run."""
    per_run = [latency_rows(r) for r in reports]
    out = {}
    for key in per_run[0]:
        runs = [p[key] for p in per_run if key in p]
        ratios = [r["vs_torch"] for r in runs if r["vs_torch"] is not None]
        out[key] = {"p50_ms_runs": [round(r["p50_ms"], 3) for r in runs],
                    "p50_ms_median": round(statistics.median(r["p50_ms"] for r in runs), 3),
                    "vs_torch_runs": [round(x, 3) for x in ratios],
                    "vs_torch_median": round(statistics.median(ratios), 3) if ratios else None,
                    "cold_start_s_runs": [round(r["cold_start_s"], 3) for r in runs],
                    "peak_rss_mb_runs": [round(r["peak_rss_mb"], 1) for r in runs if r["peak_rss_mb"] is not None],
                    "size_mb": runs[0]["size_mb"], "parity": runs[0]["parity"]}
    return out


def size_ratios(bundle: Path) -> dict:
    sizes = bundle_sizes(bundle)
    graphs = sizes.pop("graphs")
    by = {}
    for key, size in graphs.items():  # "image_encoder/onnx/int8"
        _, fmt, prec = key.split("/")
        by.setdefault(fmt, {}).setdefault(prec, 0)
        by[fmt][prec] += size
    ratio = {fmt: round(p["int8"] / p["fp32"], 4) for fmt, p in by.items() if "int8" in p and "fp32" in p}
    return {"graph_bytes": graphs, "graph_mb_by_format": {f: {p: round(b / 1e6, 2) for p, b in d.items()}
                                                         for f, d in by.items()},
            "int8_over_fp32_graphs": ratio, "bundle_mb_if_one_precision": {p: round(b / 1e6, 2) for p, b in sizes.items()},
            "int8_bundle_over_fp32_bundle": round(sizes["int8"] / sizes["fp32"], 4) if {"int8", "fp32"} <= set(sizes)
            else None}


def gate_summary(bundle: Path) -> dict:
    """The accuracy gate's record in the manifest: policy, margin, decisions per language cell, pooled cells."""
    gate = json.loads((bundle / "manifest.json").read_text(encoding="utf-8")).get("accuracy_gate") or {}
    cells = gate.get("cells", [])
    counts = {d: sum(c["decision"] == d for c in cells) for d in ("pass", "undecided", "fail")}
    pooled = [{k: c.get(k) for k in ("candidate", "metric", "n", "clusters", "lost", "gained", "drop_points",
                                     "ci_low_points", "ci_high_points", "decision")} for c in gate.get("pooled", [])]
    return {k: gate.get(k) for k in ("policy", "max_drop_points", "splits", "overridden", "blocking")} | {
        "per_language_cells": len(cells), "decisions": counts, "pooled": pooled}


def demo_summary(data: Path) -> dict:
    """The demo data set the run built: pairs, emoji, languages, pairs per language and split."""
    from collections import Counter

    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    splits = Counter(r["split"] for r in rows)
    return {"pairs": len(rows), "emoji": len({r["group"] for r in rows}), "languages": len({r["lang"] for r in rows}),
            "pairs_per_language": dict(sorted(Counter(r["lang"] for r in rows).items())),
            "pairs_per_split": dict(splits), "emoji_per_split": {s: len({r["group"] for r in rows if r["split"] == s})
                                                                for s in splits}}


def device_summary(path: Path) -> dict | None:
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    return report.get("summary", report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="quickstart output folder (default: its own default)")
    ap.add_argument("--from", dest="existing", type=Path, default=None,
                    help="read a finished quickstart folder instead of running one")
    ap.add_argument("--smoke", action="store_true", help="the smoke variant (tiny model; output in OUT/smoke)")
    ap.add_argument("--bench-runs", type=int, default=2, help="benchmark runs in all, the quickstart's included")
    ap.add_argument("--json", type=Path, required=True, help="where to write the figures")
    args = ap.parse_args(argv)
    figures: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                 "python": platform.python_version()}}
    if args.existing:
        out = args.existing.resolve()
    else:
        figures["quickstart_process"] = run_quickstart(args.out, args.smoke)
        if figures["quickstart_process"]["exit"] != 0:
            write_report(args.json, json.dumps(figures, indent=2) + "\n")
            print(f"quickstart failed (exit {figures['quickstart_process']['exit']}); wrote {args.json}")
            return 1
        out = (args.out or Path("lugha-quickstart")).resolve() / ("smoke" if args.smoke else "")
    figures["quickstart"] = json.loads((out / "quickstart.json").read_text(encoding="utf-8"))
    bundle, run = out / "bundle", out / "run"
    figures["demo_data"] = demo_summary(out / "data")
    figures["sizes"] = size_ratios(bundle)
    figures["gates"] = gate_summary(bundle)
    figures["device_tests"] = device_summary(out / "device_report.json")
    reports = [json.loads((out / "bench.json").read_text(encoding="utf-8"))]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.bench_runs):
            reports.append(bench_once(bundle, run, Path(tmp) / f"bench{i}.json"))
    figures["bench"] = {"settings": reports[0]["settings"], "runs": len(reports), "cases": summarize_bench(reports)}
    write_report(args.json, json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
