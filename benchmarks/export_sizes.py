"""Export figures: bundle sizes per precision, int8 parity and per-language R@1 drops, --trim-vocab, the
advisor's B0 point, and optimum's ORTQuantizer presets against the plain onnxruntime path.

  python benchmarks/export_sizes.py --manifest datasets/demo/manifest.jsonl --out export_sizes.json
  python benchmarks/export_sizes.py --run runs/default --out export_sizes.json   # a trained run

Without --run it looks for a trained run of the default model under /work/main/runs and /tmp; failing that
it exports the UNTRAINED default model (pretrained towers, random projections) and says so in the JSON.
Prints as it goes and writes one JSON file; it is a benchmark, not a test (minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT, B0 = "lowclip-lite0-e5small", "lowclip-b0-mdistilbert"


def find_run(model: str) -> Path | None:
    for root in (Path("/work/main/runs"), Path("/tmp")):
        for cfg in sorted(root.glob("**/best/model_config.json")) if root.is_dir() else []:
            try:
                if json.loads(cfg.read_text())["name"] == model:
                    return cfg.parent.parent
            except (OSError, ValueError, KeyError):
                continue
    return None


def bundle_sizes(bundle: Path) -> dict:
    """Bytes of a one-precision bundle for each precision: shared files + that precision's graphs/goldens."""
    from lugha.manifest import load_bundle_manifest

    m = load_bundle_manifest(bundle, verify=False)
    shared = sum(f.size for f in m.files if not f.path.startswith(("graphs/", "golden/")))
    out = {}
    for p in {g.precision for g in m.graphs}:
        mine = sum(f.size for f in m.files if f.path.startswith(("graphs/", "golden/"))
                   and (f".{p}." in f.path or f"_{p}." in f.path))
        out[p] = shared + mine + (bundle / "manifest.json").stat().st_size
    out["graphs"] = {g.key: next(f.size for f in m.files if f.path == g.file) for g in m.graphs}
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def median_ms(fn, inputs, repeat: int = 10) -> float:
    fn(inputs)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(inputs)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def image_study(source, bundle: Path, pixels: np.ndarray) -> dict:
    from lugha.export.graph_runners import batched, onnx_runner

    ref = batched(onnx_runner(bundle / "graphs/image_encoder.fp32.onnx"), {"pixel_values": pixels})["image_embeds"]
    q = batched(onnx_runner(bundle / "graphs/image_encoder.int8.onnx"), {"pixel_values": pixels})["image_embeds"]
    return {"images": len(pixels), "int8_vs_fp32_cosine": cosines(ref, q)}


def optimum_study(bundle: Path, encode, texts: list[str]) -> dict:
    """The transformers text tower through optimum-onnx's ORTQuantizer presets vs the plain path."""
    from lugha.export.graph_runners import onnx_runner

    ids, mask = encode(texts)
    feed = {"input_ids": ids, "attention_mask": mask}
    ref = onnx_runner(bundle / "graphs/text_encoder.fp32.onnx")(feed)["text_embeds"]
    rows = {"lugha default (the bundle's text_encoder.int8.onnx)": bundle / "graphs/text_encoder.int8.onnx"}
    out = {}
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        with tempfile.TemporaryDirectory() as tmp:
            for preset in ("arm64", "avx512_vnni"):
                qcfg = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)
                q = ORTQuantizer.from_pretrained(bundle / "graphs", file_name="text_encoder.fp32.onnx")
                dst = Path(tmp) / preset
                q.quantize(save_dir=dst, quantization_config=qcfg)
                keep = Path(tempfile.mkdtemp()) / f"{preset}.onnx"
                next(dst.glob("*.onnx")).rename(keep)
                rows[f"optimum ORTQuantizer {preset}"] = keep
    except Exception as e:  # noqa: BLE001 - optimum's API moves; report, do not crash the benchmark
        out["optimum_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    for name, path in rows.items():
        run = onnx_runner(path)
        emb = run(feed)["text_embeds"]
        out[name] = {"mb": path.stat().st_size / 1e6, "cosine_vs_fp32": cosines(ref, emb),
                     "ms_per_batch": median_ms(run, {k: v[:8] for k, v in feed.items()})}
        print(f"  text int8 {name}: {out[name]}", flush=True)
    return out


def b0_study(manifest: Path, pixels_lite: np.ndarray, calib_n: int) -> dict:
    """B0 (SiLU + squeeze-excite) image tower int8: as-is vs the advisor's keep-float and w8a16."""
    from lugha.config import get_model_config
    from lugha.export import advisor
    from lugha.export.graph_runners import batched, onnx_runner
    from lugha.export.onnx_export import export_onnx
    from lugha.export.onnx_quant import quantize_image_static
    from lugha.export.source import untrained_source
    from lugha.export.specs import SPECS
    from lugha.preprocess import preprocess_batch
    from lugha.training.data import PairSet

    cfg = get_model_config(B0)
    # timm's B0 weights and the distilbert hub model are unreachable offline: random-init B0 at full size,
    # and the e5 test-twin text tower (the text side plays no part here)
    twin = get_model_config("test-tiny-b0")
    cfg = cfg.replace(image_tower=dataclasses.replace(cfg.image_tower, weights=None), text_tower=twin.text_tower)
    src = untrained_source(DEFAULT, manifest)
    from lugha.training.model import build_model

    src.model = build_model(cfg, src.tokenizer.vocab_size).eval()
    src.model_cfg = cfg
    pairs = PairSet(manifest, "test")
    pixels = preprocess_batch(pairs.image_paths[:len(pixels_lite)], cfg.preprocess)
    from lugha.export.source import calibration_batches

    calib = calibration_batches(src, calib_n)
    out = {"weights": "random init (timm/hub weights unreachable offline)", "findings": []}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "b0.fp32.onnx"
        export_onnx(SPECS["image_encoder"], src.model, {"pixel_values": pixels[:2]}, fp32)
        ref = batched(onnx_runner(fp32), {"pixel_values": pixels})["image_embeds"]
        for policy in ("as-is", "keep-float", "w8a16"):
            plan = advisor.plan_int8(fp32, "image_encoder", policy)
            dst = Path(tmp) / f"b0.{policy}.onnx"
            quantize_image_static(fp32, dst, calib, "percentile", True, plan.nodes_to_exclude, plan.activations)
            emb = batched(onnx_runner(dst), {"pixel_values": pixels})["image_embeds"]
            out[policy] = {"mb": dst.stat().st_size / 1e6, "cosine_vs_fp32": cosines(ref, emb),
                           "nodes_kept_float": len(plan.nodes_to_exclude)}
            out["findings"] = advisor.format_findings(plan.findings)
            print(f"  B0 int8 {policy}: {out[policy]}", flush=True)
        out["fp32_mb"] = fp32.stat().st_size / 1e6
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, help="dataset manifest (default: the run's)")
    ap.add_argument("--run", type=Path, help="trained run of the default model (default: search)")
    ap.add_argument("--out", type=Path, default=Path("export_sizes.json"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lugha-export-bench")
    ap.add_argument("--eval-limit", type=int, default=0, help="eval rows per language (0 = all)")
    ap.add_argument("--calib-samples", type=int, default=None,
                    help="image calibration images (default: lugha export's, ExportOptions.calib_samples)")
    ap.add_argument("--formats", default="onnx")
    ap.add_argument("--skip", default="", help="comma list of studies to skip: trim,optimum,b0")
    ap.add_argument("--languages", default="", help="comma list to evaluate, 'all' for every language "
                                                     "(default: the run's own languages)")
    args = ap.parse_args(argv)
    from lugha.export.pipeline import ExportOptions, export_run
    from lugha.export.source import load_run_source, token_encoder, untrained_source

    skip = set(filter(None, args.skip.split(",")))
    began = time.time()
    run = args.run or find_run(DEFAULT)
    if run is not None:
        source, origin = load_run_source(run), f"trained run {run}"
    else:
        if args.manifest is None:
            ap.error("no trained run found: pass --manifest to export the untrained default model")
        source, origin = untrained_source(DEFAULT, args.manifest), f"UNTRAINED {DEFAULT} (no trained run found)"
    if args.languages:
        source.languages = () if args.languages == "all" else tuple(args.languages.split(","))
    manifest = args.manifest or source.manifest
    source.manifest = Path(manifest)
    print(f"source: {origin}", flush=True)
    result = {"source": origin, "manifest": str(manifest), "formats": args.formats}
    args.work.mkdir(parents=True, exist_ok=True)
    calib = args.calib_samples or ExportOptions.calib_samples
    result["calib_samples"] = calib
    common = dict(formats=tuple(args.formats.split(",")), eval_limit=args.eval_limit, overwrite=True,
                  calib_samples=calib, allow_drop=True)
    t = time.time()
    full = export_run(source, args.work / "default", ExportOptions(precisions=("fp32", "int8"), **common),
                      say=lambda m: print("  " + m, flush=True))
    sizes = bundle_sizes(full.bundle)
    result["default"] = {"seconds": round(time.time() - t, 1), "bundle_bytes": {k: v for k, v in sizes.items() if k != "graphs"},
                         "graph_bytes": sizes["graphs"], "int8_over_fp32": sizes["int8"] / sizes["fp32"],
                         "worst_drops": full.report["worst_drops"],
                         "drops": [r for r in full.report["accuracy"] if r["candidate"].endswith("int8")],
                         "parity": full.report["parity"], "advisor": full.report["advisor"]}
    print(f"int8 bundle / fp32 bundle = {result['default']['int8_over_fp32']:.3f} (target <= 0.27)", flush=True)
    from lugha.export.source import eval_pairs, limit_pairs
    from lugha.preprocess import preprocess_batch

    pairs = limit_pairs(eval_pairs(source, "test")[0], args.eval_limit)
    pixels = preprocess_batch(pairs.image_paths, source.preprocess)
    result["default"]["image"] = image_study(source, full.bundle, pixels)
    print(f"image int8 vs fp32 cosine: {result['default']['image']}", flush=True)
    if "optimum" not in skip:
        result["optimum_text_int8"] = optimum_study(full.bundle, token_encoder(source.tokenizer), pairs.texts[:64])
    if "trim" not in skip:
        langs = sorted(set(pairs.languages))
        t = time.time()
        trimmed = export_run(source, args.work / "trimmed", ExportOptions(precisions=("int8",), trim_vocab=True, **common),
                             say=lambda m: print("  " + m, flush=True))
        ts = bundle_sizes(trimmed.bundle)
        before = sizes["graphs"]["text_encoder/onnx/int8"]
        after = ts["graphs"]["text_encoder/onnx/int8"]
        result["trim_vocab"] = {"languages": langs, "report": trimmed.report["vocab_trim"],
                                "text_int8_bytes_before": before, "text_int8_bytes_after": after,
                                "text_int8_smaller_by": before / after, "bundle_int8_bytes": ts["int8"],
                                "worst_drops": trimmed.report["worst_drops"], "seconds": round(time.time() - t, 1)}
        print(f"trim-vocab: text int8 {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB ({before / after:.2f}x)", flush=True)
    if "b0" not in skip:
        result["b0_image_int8"] = b0_study(Path(manifest), pixels, calib)
    result["wall_s"] = round(time.time() - began, 1)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
