"""1 vs 2 training processes on CPU (gloo): samples/s, and the metrics both reach.

    python benchmarks/distributed.py --out benchmarks/distributed.json

Builds the demo data (en, sw, yo; ``--limit`` emoji at ``--image-size`` px) and trains the tiny twin
(``configs/test-tiny.yaml``: LoRA on the text tower, no dropout, the image tower live and frozen, so each
process decodes and encodes its own slice of every batch) twice per repeat: ``lugha train`` in one process,
and ``lugha train --nproc-per-node 2`` (torchrun, DistributedDataParallel, one torch thread per process),
the same global batch. Throughput per run is the median over epochs after the first (warm-up: page cache,
allocator, gloo's first collectives) of global batch x steps per epoch / the epoch's seconds (from the run's
own ``metrics.jsonl``; no validation inside an epoch). ``--repeats`` alternating pairs; medians, and the
2-process/1-process ratio of each pair. Metrics: the last validation of each run and the largest
difference between the two runs' logged losses and metrics (fp32: ~1e-6, not 0: sums in another order).

Shared machines are noisy: the JSON records the load average before and after; read the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the twin's text tower without dropout (nor LoRA's): each process draws other masks, so with dropout the two
# runs would differ by design, not by arithmetic
TOWER = ("{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
         "hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}")


def run_train(manifest: Path, cache: Path, out: Path, nproc: int, args) -> dict:
    sets = [f"data.manifest={manifest}", f"data.cache_dir={cache}", "data.languages=[en, sw, yo]",
            f"data.batch_size={args.batch_size}", f"loop.epochs={args.epochs}", "loop.eval_every=0",
            "runtime.feature_cache=false", "runtime.threads=1", "model_overrides.adapter.dropout=0.0",
            f"model_overrides.text_tower.tiny={TOWER}",
            f"runtime.device={args.device}", "runtime.precision=fp32"]
    cmd = [sys.executable, "-m", "lugha.cli", "train", str(REPO / "configs" / "test-tiny.yaml"), "--out", str(out),
           "--quiet", *[x for s in sets for x in ("--set", s)]] + (["--nproc-per-node", str(nproc)] if nproc > 1 else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    steps = [b["step"] - a["step"] for a, b in zip([{"step": 0}] + epochs, epochs)]
    rates = [n * args.batch_size / e["seconds"] for n, e in zip(steps, epochs)][1:]  # the first epoch warms up
    return {"processes": nproc, "samples_per_s": round(statistics.median(rates), 1),
            "epoch_rates": [round(r, 1) for r in rates], "wall_s": round(time.perf_counter() - t0, 1),
            "rows": [{k: v for k, v in r.items() if k != "seconds"} for r in rows]}


def max_difference(a: list[dict], b: list[dict]) -> float:
    if [(r["kind"], r["step"]) for r in a] != [(r["kind"], r["step"]) for r in b]:
        raise SystemExit("the two runs logged different rows")
    return max((abs(v - y[k]) for x, y in zip(a, b) for k, v in x.items() if isinstance(v, float)), default=0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "distributed.json"))
    p.add_argument("--data", help="a manifest to train on instead of a fresh demo (en, sw, yo rows are used)")
    p.add_argument("--limit", type=int, default=200, help="demo emoji (x3 languages = rows)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64, help="the global batch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2, help="processes of the distributed runs (vs 1)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL: one GPU per process)")
    args = p.parse_args(argv)

    from lugha.data import demo
    from lugha.reports import write_report

    work = Path(tempfile.mkdtemp(prefix="lugha-ddp-bench-"))
    if args.data:
        manifest = Path(args.data).resolve()
    else:
        demo.build_demo(work / "demo", langs=["en", "sw", "yo"], limit=args.limit, image_size=args.image_size, seed=0)
        manifest = work / "demo" / "manifest.jsonl"
    cache = work / "cache"
    load_before = os.getloadavg()
    run_train(manifest, cache, work / "warm", 1, args)  # builds the image cache outside the timed runs
    pairs = []
    for i in range(args.repeats):
        order = (1, args.nproc) if i % 2 == 0 else (args.nproc, 1)
        got = {n: run_train(manifest, cache, work / f"r{i}-p{n}", n, args) for n in order}
        pairs.append({1: got[1], 2: got[args.nproc]})
        print(f"repeat {i + 1}: 1 process {got[1]['samples_per_s']} samples/s, {args.nproc} processes "
              f"{got[args.nproc]['samples_per_s']}", file=sys.stderr)
    ratios = [g[2]["samples_per_s"] / g[1]["samples_per_s"] for g in pairs]
    last = pairs[-1]
    evals = {n: [r for r in last[n]["rows"] if r["kind"] == "eval"][-1] for n in (1, 2)}
    report = {
        "what": f"lugha train, test-tiny (LoRA text tower, live frozen image tower), 1 process vs --nproc-per-node "
                f"{args.nproc} (torchrun, DDP, {'NCCL' if args.device == 'cuda' else 'gloo'}), same global batch, "
                f"{args.device}",
        "command": "python benchmarks/distributed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"data": args.data or "demo", "limit": args.limit, "image_size": args.image_size, "global_batch": args.batch_size,
                     "epochs": args.epochs, "repeats": args.repeats, "threads_per_process": 1,
                     "processes": args.nproc, "device": args.device},
        "samples_per_s": {"1_process": statistics.median(g[1]["samples_per_s"] for g in pairs),
                          f"{args.nproc}_processes": statistics.median(g[2]["samples_per_s"] for g in pairs)},
        f"ratio_{args.nproc}_vs_1": {"median": round(statistics.median(ratios), 3),
                                     "runs": [round(r, 3) for r in ratios]},
        "runs": [{n: {k: v for k, v in g[n].items() if k != "rows"} for n in (1, 2)} for g in pairs],
        "metrics": {"1_process": evals[1], f"{args.nproc}_processes": evals[2],
                    "max_abs_difference_all_logged_values": max(max_difference(g[1]["rows"], g[2]["rows"])
                                                                for g in pairs)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    write_report(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("samples_per_s", f"ratio_{args.nproc}_vs_1")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
