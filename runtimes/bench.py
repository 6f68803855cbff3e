"""Benchmark a bundle on this machine: every installed backend x precision, against PyTorch eager fp32.

Each (backend, precision) case runs in a fresh Python process (``isolate``), so its cold start includes
importing the engine and its peak RSS is its own, as on a device that starts the app. Per graph and batch
size: warm-up runs, then timed repeats (p50/p90/p99 ms, items/s). Inputs are the bundle's golden inputs
tiled to the batch size, so every backend and the reference see the same tensors, and each case also
reports its parity against the golden outputs. Ratios are against the reference measured in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lugha.errors import ConfigError, LughaError
from lugha.manifest import GraphSpec, bundle_root, load_bundle_manifest
from lugha.parity import compare_outputs
from lugha.progress import progress
from lugha.vocabulary import PRECISIONS
from lugha.runtimes.backends import (BACKENDS, REFERENCE_BACKEND, installed_backends, is_installed, load_reference,
                                    not_installed_reason)

WORKER_TIMEOUT_S = 3600


class BenchError(LughaError):
    """A benchmark case that could not run (its worker's error is in the message)."""


@dataclass
class BenchSettings:
    backends: tuple[str, ...] | None = None  # None: every installed backend whose format the bundle has
    precisions: tuple[str, ...] | None = None  # None: every precision the bundle has
    threads: int | None = 1
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 3
    repeats: int = 20
    reference: str | None = None  # a training run folder, or "config"; None: no PyTorch column
    isolate: bool = True
    # "module:function" that makes the reference of ``reference`` (lugha.export.eager_reference supplies it:
    # the runtimes never import torch); a string because each case's worker process rebuilds it.
    reference_factory: str | None = None


def peak_rss_mb() -> float | None:
    """This process's peak resident set size, MB; None where unsupported.

    Linux: VmHWM of /proc/self/status, because getrusage's ru_maxrss survives fork + exec and a worker
    would report its parent's peak; elsewhere resource.getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes on macOS, KiB elsewhere


def bench_inputs(root: Path, spec: GraphSpec, batch: int, seq_len: int = 16) -> dict[str, np.ndarray]:
    """Golden inputs tiled (or cut) to ``batch`` rows; synthetic ones from the spec when there are none."""
    if spec.golden is not None:
        with np.load(root / spec.golden.inputs, allow_pickle=False) as z:
            golden = {k: z[k] for k in z.files}
        rows = np.arange(batch) % next(iter(golden.values())).shape[0]
        return {k: np.ascontiguousarray(v[rows]) for k, v in golden.items()}
    rng = np.random.default_rng(0)
    out = {}
    for t in spec.inputs:
        shape = [batch if i == 0 else (d if isinstance(d, int) else seq_len) for i, d in enumerate(t.shape)]
        if t.name == "attention_mask":
            out[t.name] = np.ones(shape, t.dtype)
        elif np.dtype(t.dtype).kind in "iu":
            out[t.name] = rng.integers(0, 100, shape).astype(t.dtype)
        else:
            out[t.name] = rng.normal(size=shape).astype(t.dtype)
    return out


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def measure_case(bundle: str, backend: str, precision: str, threads: int | None, batches: list[int],
                 warmup: int, repeats: int, reference: str | None = None, reference_factory: str | None = None) -> dict:
    """Open the bundle on one backend/precision and time every graph at every batch size; the reference
    case (backend ``torch``) opens what ``reference_factory`` makes of ``reference``."""
    from lugha.runtimes.bundle import open_bundle

    rss_before = peak_rss_mb()
    start = time.perf_counter()
    model = load_reference(reference_factory or "", reference) if backend == REFERENCE_BACKEND else None
    b = open_bundle(bundle, backend=backend, precision=precision, threads=threads, verify=False, reference=model)
    cold = time.perf_counter() - start
    sizes = {f.path: f.size for f in b.manifest.files}
    graphs = {}
    for name, session in sorted(b.sessions.items()):
        spec = session.spec
        entry: dict = {"file": spec.file, "size_bytes": sizes.get(spec.file), "batches": {}}
        if spec.golden is not None:
            with np.load(b.root / spec.golden.inputs) as zi, np.load(b.root / spec.golden.outputs) as zo:
                ins, ref = {k: zi[k] for k in zi.files}, {k: zo[k] for k in zo.files}
            results = compare_outputs(ref, session.run(ins), spec.tolerance, spec.key)
            # The untrained config reference cannot match the golden outputs: no verdict, only the numbers.
            verdict = None if model is not None and not model.golden_verdict else all(r.ok for r in results)
            entry["parity"] = {"ok": verdict, "max_abs": max(r.max_abs for r in results),
                               "min_cosine": min(r.min_cosine for r in results)}
        for batch in batches:
            feeds = bench_inputs(b.root, spec, batch)
            t0 = time.perf_counter()
            session.run(feeds)
            first_ms = (time.perf_counter() - t0) * 1e3
            for _ in range(warmup):
                session.run(feeds)
            ms = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                session.run(feeds)
                ms.append((time.perf_counter() - t0) * 1e3)
            stats = _percentiles(ms)
            # Throughput from the median: one descheduled run must not hide what the engine sustains.
            stats.update(first_ms=first_ms, items_per_s=batch * 1e3 / stats["p50_ms"], repeats=repeats)
            entry["batches"][str(batch)] = stats
        graphs[name] = entry
    extra = getattr(next(iter(b.sessions.values()), None), "providers", None)
    b.close()
    return {"backend": backend, "precision": b.precision, "cold_start_s": cold, "load_s": b.load_seconds,
            "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(), "providers": extra, "graphs": graphs}


def _run_isolated(case: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="lugha-bench-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", "lugha.runtimes.bench"], input=json.dumps(
            {"case": case, "out": str(out)}), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
        if proc.returncode != 0 or not out.is_file():
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise BenchError(f"{case['backend']}/{case['precision']}: worker failed (exit {proc.returncode}): "
                             f"{tail[0][:300]}")
        return json.loads(out.read_text(encoding="utf-8"))


def plan_cases(bundle: str | os.PathLike, settings: BenchSettings) -> tuple[list[tuple[str, str]], list[dict]]:
    """(cases to run, skipped cases with the reason) for this bundle on this machine."""
    m = load_bundle_manifest(bundle, verify=False)
    have = {(g.format, g.precision) for g in m.graphs}
    names = list(settings.backends) if settings.backends else installed_backends()
    cases, skipped = [], []
    for name in names:
        if name == REFERENCE_BACKEND:
            continue  # the reference is its own case, from settings.reference
        if name not in BACKENDS:
            skipped.append({"backend": name, "precision": "", "reason": f"unknown backend; known: {', '.join(BACKENDS)}"})
            continue
        fmt = BACKENDS[name].format
        precisions = sorted({p for f, p in have if f == fmt}, key=PRECISIONS[::-1].index)  # int8 first
        if settings.precisions:
            precisions = [p for p in settings.precisions if (fmt, p) in have] or []
        if not precisions:
            at = f" at {','.join(settings.precisions)}" if settings.precisions else ""
            skipped.append({"backend": name, "precision": ",".join(settings.precisions or ()),
                            "reason": f"bundle has no {fmt} graphs{at}"})
        elif not is_installed(name):
            skipped.append({"backend": name, "precision": ",".join(precisions), "reason": not_installed_reason(name)})
        else:
            cases += [(name, p) for p in precisions]
    if settings.reference is not None:
        if not settings.reference_factory:
            raise ConfigError("reference_factory", "a reference needs the 'module:function' that opens it "
                              "(lugha bench --reference passes lugha.export.eager_reference's)")
        missing = load_reference(settings.reference_factory, settings.reference).missing
        if missing:
            skipped.append({"backend": REFERENCE_BACKEND, "precision": "fp32", "reason": missing})
        else:
            cases.insert(0, (REFERENCE_BACKEND, "fp32"))
    return cases, skipped


def machine_info() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}


def run_benchmark(bundle: str | os.PathLike, settings: BenchSettings | None = None) -> dict:
    """The whole report (JSON-ready): machine, settings, cases, flat rows with ratios, sizes, metrics."""
    settings = settings or BenchSettings()
    root = bundle_root(bundle)
    m = load_bundle_manifest(root, verify=True)  # once, here: the workers skip hashing
    cases, skipped = plan_cases(root, settings)
    results = []
    for backend, precision in progress(cases, desc="bench cases"):
        case = {"bundle": str(root), "backend": backend, "precision": precision, "threads": settings.threads,
                "batches": list(settings.batches), "warmup": settings.warmup, "repeats": settings.repeats,
                **({"reference": settings.reference, "reference_factory": settings.reference_factory}
                   if backend == REFERENCE_BACKEND else {})}
        try:
            results.append(_run_isolated(case) if settings.isolate else measure_case(**case))
        except (LughaError, subprocess.TimeoutExpired) as e:
            skipped.append({"backend": backend, "precision": precision, "reason": str(e)})
    return {"bundle": str(root), "model": m.model.name, "machine": machine_info(), "settings": asdict(settings),
            "cases": results, "rows": table_rows(results), "skipped": skipped,
            "sizes": {f.path: f.size for f in m.files}, "total_bytes": m.total_bytes, "metrics": m.metrics,
            "accuracy_gate": m.accuracy_gate.to_dict() if m.accuracy_gate else None}


def table_rows(cases: list[dict]) -> list[dict]:
    """One row per (graph, batch, backend, precision); ``vs_torch`` = p50 / the torch p50 of that graph
    and batch (below 1 is faster than PyTorch eager fp32)."""
    ref = {(g, bs): st["p50_ms"] for c in cases if c["backend"] == REFERENCE_BACKEND
           for g, e in c["graphs"].items() for bs, st in e["batches"].items()}
    rows = []
    for c in cases:
        for g, e in c["graphs"].items():
            for bs, st in e["batches"].items():
                base = ref.get((g, bs))
                parity = e.get("parity")
                rows.append({"graph": g, "batch": int(bs), "backend": c["backend"], "precision": c["precision"],
                             "p50_ms": st["p50_ms"], "p90_ms": st["p90_ms"], "p99_ms": st["p99_ms"],
                             "items_per_s": st["items_per_s"],
                             "vs_torch": st["p50_ms"] / base if base else None,
                             "cold_start_s": c["cold_start_s"], "peak_rss_mb": c["peak_rss_mb"],
                             "size_mb": e["size_bytes"] / 1e6 if e.get("size_bytes") is not None
                             and c["backend"] != REFERENCE_BACKEND else None,
                             "parity": None if parity is None else _verdict(parity["ok"])})
    rows.sort(key=lambda r: (r["graph"], r["batch"], r["backend"] != REFERENCE_BACKEND, r["backend"], r["precision"]))
    return rows


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "ok" if ok else "FAIL"


def _cell(v):
    """Readable numbers for the terminal: 3 significant digits, no exponents for big throughputs."""
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return v


COLUMNS = ["graph", "batch", "backend", "precision", "p50_ms", "p90_ms", "p99_ms", "items_per_s", "vs_torch",
           "cold_start_s", "peak_rss_mb", "size_mb", "parity"]


def markdown_report(report: dict) -> str:
    from lugha.reports import format_table

    lines = [f"bundle {report['bundle']} ({report['model']}) on {report['machine']['platform']}, "
             f"{report['settings']['threads']} thread(s), {report['settings']['repeats']} repeats after "
             f"{report['settings']['warmup']} warm-up", "", format_table([{k: _cell(v) for k, v in r.items()} for r in report["rows"]], COLUMNS)]
    if not any(c["backend"] == REFERENCE_BACKEND for c in report["cases"]):
        lines += ["", "no PyTorch reference column: pass --reference RUN (needs torch)"]
    lines += [f"skipped {s['backend']}/{s['precision'] or '*'}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


def _worker() -> int:
    job = json.loads(sys.stdin.read())
    result = measure_case(**job["case"])
    Path(job["out"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":  # the isolated worker: python -m lugha.runtimes.bench < job.json
    sys.exit(_worker())


__all__ = ["BenchSettings", "BenchError", "run_benchmark", "measure_case", "plan_cases", "table_rows",
           "markdown_report", "bench_inputs", "peak_rss_mb", "COLUMNS"]
