"""What one CPU core feeds a trainer: samples/s from PNG files vs from the image cache, and the cores an H100 needs.

    lugha data demo --out /tmp/loaderdemo --langs en,sw,yo
    python benchmarks/loader.py --data /tmp/loaderdemo/manifest.jsonl --out benchmarks/loader.json

Every path runs in this one process with one torch thread and no worker processes, so its rate is what
one loader core delivers; the rate is counted per CPU-second of this process (``time.process_time``),
which a machine shared with other jobs inflates far less than wall time (wall rates are kept beside).
The paths, on the same batches of the train split (the trainer's own ``epoch_batches``):

* ``png_files`` - decode + resize each PNG every epoch (``ImageStore(use_cache=False)`` through
  ``PixelDataset``): what a DataLoader worker does with no cache.
* ``cache_per_item`` - the worker path over the uint8 cache: one memmap row per ``__getitem__``, then
  collate (``data.loader: workers`` with ``data.image_cache: true``).
* ``cache_batches`` - ``CachedBatches``: one ``np.take`` per batch on a thread (``data.loader: cache``);
  its crops and flips run on the GPU, so this is the whole CPU cost per image there.
* ``cache_batches_crop_on_cpu`` - the same with ``crop_hflip`` on a CPU device (what augmentation costs
  when there is no GPU to run it; on a GPU this work is not the CPU's).
* ``captions`` - the kit tokenizer on the batch's captions (the trainer tokenises in its main process).

Each path: one untimed warm-up pass (page cache, allocator), then ``--repeats`` timed windows of whole
passes, at least ``--min-seconds`` each; medians and ratios against ``png_files`` from the same run.
``cores_for_h100`` divides the H100's compiled full-fine-tune rate (``--gpu-rate``; the issue's ~4,000
samples/s, measured 4,076 in device_tests/results/h100_bench_training_run1.json) by each per-core rate.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizer's thread pool: one core means one core
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(run_pass, samples: int, repeats: int, min_seconds: float) -> dict:
    """Warm-up pass, then ``repeats`` windows of ``k`` passes (k sized by the warm-up to last min_seconds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    run_pass()
    warm = max(time.perf_counter() - t0, 1e-6)
    k = max(1, int(min_seconds / warm + 0.999))
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(k):
            run_pass()
        wall.append(k * samples / (time.perf_counter() - t0))
        cpu.append(k * samples / max(time.process_time() - c0, 1e-9))
    return {"samples_per_cpu_s": round(statistics.median(cpu), 1), "samples_per_s_wall": round(statistics.median(wall), 1),
            "cpu_runs": [round(r, 1) for r in cpu], "wall_runs": [round(r, 1) for r in wall], "passes_per_window": k,
            "samples_per_pass": samples}


def paths(args):
    """name -> a function running one pass over the benchmark's batches."""
    from lugha.config import get_model_config
    from lugha.training.data import PairSet, PixelDataset, batch_source, epoch_batches, make_loader
    from lugha.training.image_cache import ImageStore
    from lugha.training.model import load_text_tokenizer

    cfg = get_model_config(args.model)
    pairs = PairSet(args.data, "train")
    batches = epoch_batches(pairs.langs, pairs.groups, args.batch, seed=0, epoch=0)[: args.batches]
    cached = ImageStore(pairs.image_paths, cfg.preprocess, args.cache_dir)
    cached.build(num_workers=0, show_progress=True)
    png = ImageStore(pairs.image_paths, cfg.preprocess, use_cache=False)
    tokenizer = load_text_tokenizer(cfg)

    def drain(source) -> None:
        for _ in source:
            pass

    runs = {
        "png_files": lambda: drain(make_loader(PixelDataset(pairs, png), batches, 0, seed=0)),
        "cache_per_item": lambda: drain(make_loader(PixelDataset(pairs, cached), batches, 0, seed=0)),
        "cache_batches": lambda: drain(batch_source(pairs, cached, batches, seed=0, epoch=0, loader="cache")),
        "cache_batches_crop_on_cpu": lambda: drain(batch_source(pairs, cached, batches, seed=0, epoch=0,
                                                                loader="cache", augment="crop_hflip")),
        "captions": lambda: [tokenizer([pairs.texts[i] for i in b]) for b in batches],
    }
    from PIL import Image

    with Image.open(pairs.image_paths[0]) as im:
        source = f"{im.format} {im.width}x{im.height} {im.mode}"
    mean_bytes = sum(os.path.getsize(x) for x in pairs.image_paths) / len(pairs.image_paths)
    facts = {"manifest": str(args.data), "train_rows": len(pairs), "distinct_images": len(pairs.image_paths),
             "source_images": f"{source} (first), {mean_bytes / 1024:.1f} KiB mean",
             "model": cfg.name, "image_size": cfg.preprocess.size, "resize": cfg.preprocess.resize,
             "batch": args.batch, "batches_per_pass": len(batches), "cache_file": str(cached.cache_path)}
    return runs, sum(len(b) for b in batches), facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a demo manifest (lugha data demo --out DIR)")
    p.add_argument("--out", default="benchmarks/loader.json")
    p.add_argument("--model", default="lowclip-lite0-e5small", help="whose preprocessing spec and tokenizer")
    p.add_argument("--batch", type=int, default=256, help="the GPU benchmark's batch")
    p.add_argument("--batches", type=int, default=6, help="batches per pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest timed window")
    p.add_argument("--gpu-rate", type=float, default=4000.0, help="samples/s the GPU consumes")
    p.add_argument("--cache-dir", default=None, help="where the image cache goes (default LUGHA_HOME/cache)")
    args = p.parse_args(argv)

    import numpy as np
    import PIL
    import torch

    torch.set_num_threads(1)
    runs, samples, facts = paths(args)
    load_before = os.getloadavg()
    rows = {}
    for name, run_pass in runs.items():
        rows[name] = timed(run_pass, samples, args.repeats, args.min_seconds)
        print(f"{name:<28} {rows[name]['samples_per_cpu_s']:>10,.0f} samples per CPU-second  "
              f"({rows[name]['samples_per_s_wall']:,.0f}/s wall)", flush=True)
    base = rows["png_files"]["samples_per_cpu_s"]
    ratios = {f"{n}_vs_png_files": round(r["samples_per_cpu_s"] / base, 1) for n, r in rows.items() if n != "png_files"}
    ratios["cache_batches_vs_cache_per_item"] = round(rows["cache_batches"]["samples_per_cpu_s"]
                                                      / rows["cache_per_item"]["samples_per_cpu_s"], 1)
    cap = rows["captions"]["samples_per_cpu_s"]
    cores = {}
    for n in ("png_files", "cache_per_item", "cache_batches"):
        img = args.gpu_rate / rows[n]["samples_per_cpu_s"]
        cores[n] = {"images": round(img, 2), "images_and_captions": round(img + args.gpu_rate / cap, 2)}
    report = {
        "benchmark": "loader samples/s per CPU core (benchmarks/loader.py)",
        "command": "python benchmarks/loader.py " + " ".join(argv if argv is not None else sys.argv[1:]), **facts,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "pillow": PIL.__version__, "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "rows": rows, "ratios": ratios,
        "gpu_rate_samples_per_s": args.gpu_rate,
        "gpu_rate_source": "issue #18's ~4,000 samples/s (compiled full fine-tune, H100, batch 256; measured "
                           "4,076 in device_tests/results/h100_bench_training_run1.json)",
        "cores_for_h100": cores,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for n, c in cores.items():
        print(f"cores for {args.gpu_rate:,.0f} samples/s from {n}: {c['images']} (with captions {c['images_and_captions']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
