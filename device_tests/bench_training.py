"""Training throughput on a GPU: full fine-tuning (eager, then compiled) vs frozen towers vs cached features.

Issue #4's benchmark. One run, one process, every figure against the eager full fine-tune measured in the
same run (the machines are noisy: read the ratios). Towers are random-init at the real shapes
(EfficientNet-B0 + a multilingual-e5-small-shaped BERT, 250k vocabulary): throughput does not depend on the
weights, and the GPU machine cannot fetch them. A `real_loader` row feeds the compiled full fine-tune from
the trainer's own data path (uint8 image cache, DataLoader workers, the kit tokenizer) on the demo images,
to show the loader keeps up with synthetic inputs already on the GPU; `real_replay` cycles a few real batches
kept on the GPU (real shapes and padding masks, no loader), which isolates the loader's own cost. `cache_loader`
is issue #18's loader (``data.loader: cache``): whole batches gathered from the uint8 memmap on one thread,
captions tokenised on it too, random crops and flips on the GPU; target >= 0.9 of synthetic.

    python device_tests/bench_training.py --json bench.json                     # synthetic inputs only
    python device_tests/bench_training.py --data DEMO/manifest.jsonl --json bench.json
    python device_tests/bench_training.py --tiny --device cpu --steps 2          # a smoke run anywhere

Not a pytest module (no ``test_`` prefix): pytest collects nothing here.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# cheap rows first, then the compiled ones (a time limit cuts the last row, not the baseline)
MODES = ("full_eager", "cached_features", "full_compiled", "cache_loader", "real_replay", "real_loader",
         "frozen_towers")


def bench_model_config(tiny: bool):
    from lugha.config import E5_SMALL_SHAPE, ImageTowerConfig, get_model_config

    if tiny:
        return get_model_config("test-tiny-b0")
    base = get_model_config("lowclip-lite0-e5small")
    return base.replace(name="bench-b0-e5small",
                        image_tower=ImageTowerConfig(arch="efficientnet_b0", weights=None, feature_dim=1280),
                        text_tower=dataclasses.replace(base.text_tower, tiny=dict(E5_SMALL_SHAPE)))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(cfg, vocab_size: int, device, channels_last: bool, train_towers: bool):
    from lugha.training.model import build_model

    model = build_model(cfg, vocab_size, seed=0).to(device)
    model.set_channels_last(channels_last)
    for tower in (model.image_tower, model.text_tower):
        tower.requires_grad_(train_towers)
    model.train()  # LowClip.train keeps frozen towers in eval (BatchNorm statistics do not drift)
    return model


def optimizer_for(model, fused: bool):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # the eager baseline is stock AdamW (foreach); the tuned rows use the fused CUDA kernel, as the trainer does
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **({"fused": True} if fused else {"foreach": True}))


def make_step(model, opt, autocast, compiled: bool, towers_frozen: bool):
    """One optimizer step on (pixels, ids, mask) or on cached (image_feats, text_feats)."""
    import torch

    def loss_of(pixels, ids, mask):
        if towers_frozen:
            with torch.no_grad():
                img_f, txt_f = model.image_features(pixels), model.text_features(ids, mask)
            return model.loss(model.project_image(img_f), model.project_text(txt_f))
        return model(pixels, ids, mask)

    fwd = torch.compile(loss_of) if compiled else loss_of

    def step(pixels, ids, mask):
        with autocast():
            loss = fwd(pixels, ids, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def make_cached_step(model, opt, autocast):
    def step(img_f, txt_f):
        with autocast():
            loss = model.loss(model.project_image(img_f), model.project_text(txt_f))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def time_steps(step, batches, device, warmup: int, steps: int, repeats: int, batch: int) -> dict:
    """Warm-up (compilation happens here), then ``repeats`` timed windows of ``steps`` steps each."""
    import torch

    it = iter(batches)
    t0 = time.perf_counter()
    for _ in range(warmup):
        last = step(*next(it))
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            last = step(*next(it))
        sync(device)
        rates.append(steps * batch / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"samples_per_s": statistics.median(rates), "samples_per_s_runs": [round(r, 1) for r in rates],
            "warmup_s": round(warm_s, 2), "peak_mem_gib": round(peak, 2) if peak is not None else None,
            "final_loss": float(last.float().cpu())}


def synthetic(batch: int, size: int, seq: int, vocab: int, device, channels_last: bool):
    """The same random batch forever, already on the device: the loader-free upper bound."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    ids = torch.randint(5, vocab, (batch, seq), generator=g).to(device)
    mask = torch.ones(batch, seq, dtype=torch.int64, device=device)
    while True:
        yield pixels, ids, mask


def cached_batches(model, batch: int, n_images: int, n_texts: int, device):
    """Feature tables resident on the device (what the trainer does on CUDA), gathered by random rows."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    img = torch.randn(n_images, model.image_tower.feature_dim, generator=g).to(device)
    txt = torch.randn(n_texts, model.text_tower.hidden_size, generator=g).to(device)
    while True:
        rows = torch.randint(0, n_texts, (batch,), generator=g).to(device, non_blocking=True)
        yield img[rows % n_images], txt[rows]


def real_batches(cfg, manifest: str, batch: int, workers: int, device, channels_last: bool, tokenizer,
                 cache_dir: str):
    """The trainer's own path: ImageStore uint8 cache -> PixelDataset workers -> device normalisation,
    texts through the kit tokenizer in the main process; epochs repeat as long as the timer wants."""
    from lugha.training.data import (ImageStore, PairSet, PixelDataset, epoch_batches, make_loader,
                                     pad_to_bucket, to_model_input)

    pairs = PairSet(manifest, "train")
    store = ImageStore(pairs.image_paths, cfg.preprocess, cache_dir)
    store.build(workers, show_progress=False)
    ds = PixelDataset(pairs, store)
    epoch = 0
    while True:
        order = epoch_batches(pairs.langs, pairs.groups, batch, seed=0, epoch=epoch, balance_languages=True)
        for raw, idx in make_loader(ds, order, workers, seed=epoch, pin_memory=device.type == "cuda"):
            ids, mask = pad_to_bucket(*tokenizer([pairs.texts[i] for i in idx.tolist()]), tokenizer.pad_id)
            yield (to_model_input(raw, store.spec, device, channels_last),
                   ids.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        epoch += 1


def cache_batches(cfg, manifest: str, batch: int, device, channels_last: bool, tokenizer, cache_dir: str,
                  augment: str = "crop_hflip"):
    """The image-cache loader (``data.loader: cache``): each batch one ``np.take`` from the uint8 memmap into a
    pinned buffer on a thread, which also tokenises the captions; crops and flips run on the device."""
    from lugha.training.data import ImageStore, PairSet, batch_source, epoch_batches, pad_to_bucket, to_model_input

    pairs = PairSet(manifest, "train")
    store = ImageStore(pairs.image_paths, cfg.preprocess, cache_dir)
    store.build(min(8, os.cpu_count() or 1), show_progress=False)

    def captions(rows):
        return pad_to_bucket(*tokenizer([pairs.texts[i] for i in rows]), tokenizer.pad_id)

    epoch = 0
    while True:
        order = epoch_batches(pairs.langs, pairs.groups, batch, seed=0, epoch=epoch, balance_languages=True)
        for pixels, _, ids, mask in batch_source(pairs, store, order, seed=0, epoch=epoch, augment=augment,
                                                 loader="cache", device=device, prepare=captions):
            yield (to_model_input(pixels, store.spec, device, channels_last),
                   ids.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        epoch += 1


def replayed(batches, n: int = 8):
    """The first ``n`` real batches, kept on the device and cycled: real shapes and padding masks (which
    pick different attention kernels than an all-ones mask) with no loader in the loop. real_loader over
    this row is the loader's own cost; over full_compiled it also counts the data's shapes."""
    kept = [next(batches) for _ in range(n)]
    while True:
        yield from kept


def run(args, on_row=None) -> dict:
    """Every mode in turn; ``on_row(report so far)`` after each (a killed run keeps its rows)."""
    import torch

    from lugha.training.optim import autocast_for
    from lugha.training.text_tower import load_text_tokenizer

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    autocast, _, precision = autocast_for(device, args.precision)
    cfg = bench_model_config(args.tiny)
    tokenizer = load_text_tokenizer(cfg)
    size, batch = cfg.preprocess.size, args.batch
    rows: dict[str, dict] = {}
    modes = [m for m in args.modes.split(",") if m]
    for needs_data in ("real_replay", "real_loader", "cache_loader"):
        if needs_data in modes and not args.data:
            print(f"{needs_data}: skipped (no --data MANIFEST given)", file=sys.stderr)
            modes.remove(needs_data)
    for mode in modes:
        torch.manual_seed(0)
        tuned = mode != "full_eager"
        frozen = mode in ("frozen_towers", "cached_features")
        model = build(cfg, tokenizer.vocab_size, device, channels_last=tuned, train_towers=not frozen)
        opt = optimizer_for(model, fused=tuned and device.type == "cuda")
        if mode == "cached_features":
            step = make_cached_step(model, opt, autocast)
            batches = cached_batches(model, batch, 1563, 24741, device)
        else:
            step = make_step(model, opt, autocast, compiled=tuned and not args.no_compile, towers_frozen=frozen)
            if mode == "cache_loader":
                batches = cache_batches(cfg, args.data, batch, device, True, tokenizer, args.cache_dir)
            elif mode in ("real_loader", "real_replay"):
                batches = real_batches(cfg, args.data, batch, args.workers, device, True, tokenizer, args.cache_dir)
                batches = replayed(batches) if mode == "real_replay" else batches
            else:
                batches = synthetic(batch, size, args.seq_len, tokenizer.vocab_size, device, channels_last=tuned)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        steps = args.steps * (20 if mode == "cached_features" else 1)  # head steps are ~1 ms: time more of them
        print(f"{mode}: {n_train:,} trainable parameters, timing {args.repeats} x {steps} steps ...", flush=True)
        # real captions vary in length: compile specialises, then goes dynamic; give it steps to settle
        warmup = args.warmup * (3 if mode in ("real_loader", "real_replay", "cache_loader") else 1)
        r = time_steps(step, batches, device, warmup, steps, args.repeats, batch)
        rows[mode] = {"trainable_params": n_train, **r}
        print(f"  {r['samples_per_s']:,.0f} samples/s  peak {r['peak_mem_gib']} GiB  (warm-up {r['warmup_s']} s)",
              flush=True)
        del model, opt, step, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if on_row is not None:
            on_row(summarise(rows, cfg, tokenizer, args, device, precision))
    return summarise(rows, cfg, tokenizer, args, device, precision)


def summarise(rows: dict, cfg, tokenizer, args, device, precision: str) -> dict:
    import torch

    size, batch = cfg.preprocess.size, args.batch
    base = rows.get("full_eager", {}).get("samples_per_s")
    for mode, r in rows.items():
        r["x_full_eager"] = round(r["samples_per_s"] / base, 2) if base else None
    ratios = {}
    if "full_compiled" in rows and base:
        ratios["full_compiled_vs_eager"] = rows["full_compiled"]["x_full_eager"]
    if "cached_features" in rows and base:
        ratios["cached_vs_full_eager"] = rows["cached_features"]["x_full_eager"]
    if "cached_features" in rows and "full_compiled" in rows:
        ratios["cached_vs_full_compiled"] = round(rows["cached_features"]["samples_per_s"]
                                                  / rows["full_compiled"]["samples_per_s"], 2)
    if "real_loader" in rows and "full_compiled" in rows:
        ratios["real_loader_vs_synthetic"] = round(rows["real_loader"]["samples_per_s"]
                                                   / rows["full_compiled"]["samples_per_s"], 3)
    if "cache_loader" in rows and "full_compiled" in rows:
        ratios["cache_loader_vs_synthetic"] = round(rows["cache_loader"]["samples_per_s"]
                                                    / rows["full_compiled"]["samples_per_s"], 3)
    if "real_loader" in rows and "real_replay" in rows:
        ratios["real_loader_vs_replayed_batches"] = round(rows["real_loader"]["samples_per_s"]
                                                          / rows["real_replay"]["samples_per_s"], 3)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"benchmark": "training throughput", "model": cfg.name, "image_tower": cfg.image_tower.arch,
            "text_tower_shape": cfg.text_tower.tiny, "vocab_size": tokenizer.vocab_size, "batch": batch,
            "image_size": size, "seq_len": args.seq_len, "precision": precision, "device": str(device), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "loader_workers": args.workers, "rows": rows, "ratios": ratios,
            "targets": {"full_compiled_vs_eager": 1.5, "cached_vs_full_eager": 40, "real_loader_vs_synthetic": 0.9,
                        "cache_loader_vs_synthetic": 0.9,
                        "real_loader_vs_replayed_batches": 0.9}}


def print_table(report: dict) -> None:
    print(f"\n{report['model']} on {report['gpu'] or report['device']}, {report['precision']}, batch {report['batch']}")
    print(f"{'mode':<18} {'samples/s':>12} {'x eager':>8} {'peak GiB':>9} {'trainable':>12}")
    for mode, r in report["rows"].items():
        print(f"{mode:<18} {r['samples_per_s']:>12,.0f} {r['x_full_eager'] or '':>8} "
              f"{r['peak_mem_gib'] if r['peak_mem_gib'] is not None else '-':>9} {r['trainable_params']:>12,}")
    for k, v in report["ratios"].items():
        target = report["targets"].get(k)
        print(f"{k}: {v}" + (f" (target >= {target}: {'met' if v >= target else 'NOT met'})" if target else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=32, help="synthetic caption length in tokens (demo captions: 5-20)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat (x20 for cached features)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles here)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), bf16, fp16, fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", help="demo manifest for the real_loader row (lugha data demo --out DIR)")
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    p.add_argument("--cache-dir", default=None, help="where the uint8 image cache goes (default LUGHA_HOME/cache)")
    p.add_argument("--tiny", action="store_true", help="test-tiny-b0 towers (a smoke run, not a figure)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile in the tuned rows")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    write = (lambda r: Path(args.json).write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")) if args.json \
        else None
    report = run(args, on_row=write)
    print_table(report)
    if write:
        write(report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
