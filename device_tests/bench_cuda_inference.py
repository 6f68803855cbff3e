"""Inference on a CUDA GPU: the bundle's two graphs in PyTorch CUDA (fp32, fp16), and ONNX Runtime on CUDA
where the machine's onnxruntime has the CUDA execution provider (it says plainly when it has not).

Issue #7's CUDA row. The graphs are the export specs' own modules (``ExportSpec.wrap``: what ONNX/TFLite
export), built at the default config's shapes (EfficientNet-Lite0 + multilingual-e5-small) with random
weights: latency does not depend on the weights, and the GPU machine cannot fetch them. PyTorch fp32 on this
machine's CPU at batch 1 is measured in the same run as the reference every ratio is taken against.

    python device_tests/bench_cuda_inference.py --json cuda.json
    python device_tests/bench_cuda_inference.py --tiny --device cpu --repeats 5   # a smoke run anywhere
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np



def model_for_bench(tiny: bool):
    from lugha.config import E5_SMALL_SHAPE, get_model_config
    from lugha.training.model import build_model
    from lugha.training.text_tower import load_text_tokenizer

    base = get_model_config("test-tiny" if tiny else "lowclip-lite0-e5small")
    if not tiny:
        base = base.replace(name="bench-lite0-e5small",
                            image_tower=dataclasses.replace(base.image_tower, weights=None),
                            text_tower=dataclasses.replace(base.text_tower, tiny=dict(E5_SMALL_SHAPE)))
    tok = load_text_tokenizer(base)
    return build_model(base, tok.vocab_size, seed=0).eval(), base


def inputs_for(spec, model, batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for t in spec.inputs(model):
        if t.name == "input_ids":
            out[t.name] = rng.integers(5, vocab, size=(batch, seq)).astype(np.int64)
        elif t.name == "attention_mask":
            out[t.name] = np.ones((batch, seq), np.int64)
        else:
            shape = [batch if not isinstance(d, int) else d for d in t.shape]
            out[t.name] = rng.normal(size=shape).astype(np.float32)
    return out


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3)}


def time_fn(fn, warmup: int, repeats: int, sync=lambda: None) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def torch_case(module, feeds: dict, device, dtype, warmup: int, repeats: int) -> dict:
    import torch

    m = module.to(device=device, dtype=dtype).eval()
    args = [torch.from_numpy(v).to(device) for v in feeds.values()]
    args = [a.to(dtype) if a.is_floating_point() else a for a in args]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        ms = time_fn(lambda: m(*args), warmup, repeats, sync)
    return percentiles(ms)


def ort_case(path: Path, feeds: dict, provider: str, warmup: int, repeats: int) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=[provider])
    return percentiles(time_fn(lambda: sess.run(None, feeds), warmup, repeats))


def run(args) -> dict:
    import torch

    from lugha.export.specs import specs_for

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = model_for_bench(args.tiny)
    vocab = model.text_tower.net.get_input_embeddings().num_embeddings
    batches = [int(b) for b in args.batch.split(",")]
    rows, notes = [], []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        ort, providers = None, []
    if "CUDAExecutionProvider" not in providers:
        notes.append(f"onnxruntime on this machine has no CUDAExecutionProvider (providers: {providers}): "
                     "ONNX Runtime is timed on CPU only")
    tmp = Path(tempfile.mkdtemp(prefix="lugha-cuda-bench-"))
    for spec in specs_for(model, ("image_encoder", "text_encoder")):
        model.to("cpu", torch.float32)  # the CUDA cases of the previous graph moved and cast it
        onnx_path = None
        if ort is not None and not args.no_onnx:
            from lugha.export.onnx_export import export_onnx

            try:
                done = export_onnx(spec, model, inputs_for(spec, model, 2, args.seq_len, vocab), tmp / f"{spec.name}.onnx")
                onnx_path = done.path
            except Exception as e:  # noqa: BLE001 - the torch rows still stand without an ONNX graph
                notes.append(f"{spec.name}: ONNX export failed here ({type(e).__name__}: {str(e)[:160]})")
        ref = torch_case(spec.wrap(model), inputs_for(spec, model, 1, args.seq_len, vocab), torch.device("cpu"),
                         torch.float32, args.warmup, args.repeats)
        rows.append({"graph": spec.name, "backend": "torch-cpu", "precision": "fp32", "batch": 1, **ref})
        for batch in batches:
            feeds = inputs_for(spec, model, batch, args.seq_len, vocab)
            cases = []
            if device.type == "cuda":
                cases += [("torch-cuda", "fp32", lambda f=feeds: torch_case(spec.wrap(model), f, device, torch.float32,
                                                                            args.warmup, args.repeats)),
                          ("torch-cuda", "fp16", lambda f=feeds: torch_case(spec.wrap(model), f, device, torch.float16,
                                                                            args.warmup, args.repeats))]
            if onnx_path is not None:
                for prov in [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in providers]:
                    cases.append((f"ort-{prov[:-len('ExecutionProvider')].lower()}", "fp32",
                                  lambda f=feeds, p=prov: ort_case(onnx_path, f, p, args.warmup, args.repeats)))
            for backend, precision, fn in cases:
                r = fn()
                rows.append({"graph": spec.name, "backend": backend, "precision": precision, "batch": batch, **r,
                             "items_per_s": round(batch / (r["p50_ms"] / 1e3), 1),
                             "x_torch_cpu_b1": round(r["p50_ms"] / ref["p50_ms"], 4)})
                print(f"{spec.name:<14} {backend:<10} {precision:<5} batch {batch:>3}: p50 {r['p50_ms']:.3f} ms",
                      flush=True)
    model.to("cpu", torch.float32)
    return {"benchmark": "inference latency (CUDA)", "model": cfg.name, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "onnxruntime": getattr(ort, "__version__", None), "ort_providers": providers,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "seq_len": args.seq_len,
            "warmup": args.warmup, "repeats": args.repeats, "rows": rows, "notes": notes}


def print_table(report: dict) -> None:
    print(f"\n{report['model']} on {report['gpu'] or report['device']} (ratios: p50 / torch-cpu fp32 batch 1)")
    print(f"{'graph':<14} {'backend':<10} {'prec':<5} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'items/s':>10} {'ratio':>8}")
    for r in report["rows"]:
        print(f"{r['graph']:<14} {r['backend']:<10} {r['precision']:<5} {r['batch']:>5} {r['p50_ms']:>9.3f} "
              f"{r['p99_ms']:>9.3f} {r.get('items_per_s', ''):>10} {r.get('x_torch_cpu_b1', ''):>8}")
    for n in report["notes"]:
        print(f"note: {n}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--batch", default="1,8,64", help="comma list of batch sizes")
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="test-tiny towers (a smoke run, not a figure)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and ONNX Runtime rows")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    report = run(args)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
