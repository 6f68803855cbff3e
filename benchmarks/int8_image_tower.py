"""int8 image tower variants: cosine to fp32 PyTorch on held-out real images, per-language R@1 drops,
size, batch-1 latency, quantization time.

  python benchmarks/int8_image_tower.py --run runs/default --out benchmarks/int8_image_tower.json
  python benchmarks/int8_image_tower.py --run runs/default --quick --out /tmp/int8.json
  python benchmarks/int8_image_tower.py --run /tmp/rtreal/run --images /tmp/demo_full/manifest.jsonl
  python benchmarks/int8_image_tower.py --run runs/default --formats onnx --calib 64 --update \
      --out benchmarks/int8_image_tower.json   # the README's ONNX rows (64 images, the earlier default)

Calibration uses the run's own training images, chosen as ``lugha export`` chooses them. Cosines are
measured on the run's eval split images (never calibrated on), or with ``--images`` on ``--n`` images of
that manifest the run's manifest does not hold. Per-language drops are the export gate's (R@1 both ways,
fp32 PyTorch text embeddings, so only the image tower changes), on the eval split. Every ONNX row is
:func:`lugha.export.onnx_quant.quantize_image_static` with one or two knobs changed from the default (the
first row), every TFLite row :func:`lugha.export.tflite_int8.convert_image_int8_pt2e` from litert-torch's
stock quantizer to the default, one fix at a time. Tens of minutes on 2 CPU cores (``--quick``: a few);
a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT = dict(method="percentile", percentile=99.9999, activations="uint8", per_channel=True, reduce_range=False,
               rounding="gptq", float_stem="auto", exclude="", calib=128)
ONNX_VARIANTS = [  # (label, changes from DEFAULT); the first row is what `lugha export` does
    ("default: GPTQ rounding + float stem (auto), percentile 99.9999, u8 asym", {}),
    ("no float stem (GPTQ rounding only)", {"float_stem": 0}),
    ("float stem, kernel-sum rounding", {"rounding": "kernel_sum"}),
    ("previous default: kernel-sum rounding, no float stem", {"rounding": "kernel_sum", "float_stem": 0}),
    ("plain: round to nearest, no float stem", {"rounding": "nearest", "float_stem": 0}),
    ("float stem = first 3 convs only (stem + block 0)", {"float_stem": 3}),
    ("minmax calibration", {"method": "minmax"}),
    ("percentile 99.999", {"percentile": 99.999}),
    ("activations int8 symmetric", {"activations": "int8"}),
    ("64 calibration images (the previous default)", {"calib": 64}),  # 128 with --calib 64: see onnx_variants
    ("final projection float too", {"exclude": "proj"}),
]
TFLITE_VARIANTS = [
    ("stock litert-torch PT2E quantizer", {"clamp_aware": False, "rounding": "nearest", "float_stem": 0,
                                           "observer": "histogram"}),
    ("+ conv/ReLU6 observed after the clamp", {"rounding": "nearest", "float_stem": 0, "observer": "histogram"}),
    ("+ kernel sums kept", {"rounding": "kernel_sum", "float_stem": 0, "observer": "histogram"}),
    ("+ GPTQ rounding instead", {"float_stem": 0, "observer": "histogram"}),
    ("+ float stem (auto) (previous default)", {"observer": "histogram"}),
    ("+ min/max activation ranges: the default", {}),
]


def onnx_variants(calib: int) -> list[tuple[str, dict]]:
    """ONNX_VARIANTS for a run whose rows calibrate on ``calib`` images: the calibration-size row then tries
    the other size (64 <-> 128), so `--calib 64` regenerates rows made when 64 was the default."""
    if calib != 64:
        return ONNX_VARIANTS
    return [("128 calibration images", {"calib": 128}) if "calib" in change else (label, change)
            for label, change in ONNX_VARIANTS]


def cosines(ref: np.ndarray, out: np.ndarray) -> dict:
    a, b = ref.astype(np.float64), out.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5),
            "p05": round(float(np.percentile(cos, 5)), 5)}


def heldout_images(images_manifest: Path, run_manifest: Path, n: int, seed: int) -> list[str]:
    from lugha.records import read_manifest

    seen = {str(r.image_path(run_manifest.parent)) for r in read_manifest(run_manifest)}
    paths = sorted({str(r.image_path(images_manifest.parent)) for r in read_manifest(images_manifest)} - seen)
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=min(n, len(paths)), replace=False))]


class Bench:
    """The reference embeddings, once: fp32 image embeddings of the measured images and of the eval split,
    fp32 text embeddings of the eval split; each variant only re-embeds images."""

    def __init__(self, source, spec, pixels: np.ndarray | None = None, max_drop: float = 1.0):
        from lugha.export import gates
        from lugha.export.specs import reference_runner as torch_runner
        from lugha.export.source import eval_pairs, token_encoder
        from lugha.export.specs import SPECS
        from lugha.preprocess import preprocess_batch
        from lugha.training.evaluate import load_label_names

        self.source, self.spec, self.max_drop = source, spec, max_drop
        pairs, self.split = eval_pairs(source, "test")
        self.data = gates.EvalData(pairs, preprocess_batch(pairs.image_paths, source.preprocess),
                                   token_encoder(source.tokenizer), load_label_names(source.manifest)[0])
        image = torch_runner(spec, source.model, source.layout)
        text = torch_runner(SPECS["text_encoder"], source.model)
        self.eval_img, self.eval_txt, encode = gates.embed_eval(self.data, image, text)
        # the eval split's images by default: never seen by training or calibration
        self.pixels = self.data.pixels if pixels is None else pixels
        self.ref = self.eval_img if pixels is None else image({"pixel_values": pixels})["image_embeds"]
        self._labels: dict = {}
        self.encode = lambda texts: self._labels.setdefault(tuple(texts), encode(texts))
        self.ref_metrics = self.metrics(self.eval_img)

    def metrics(self, img: np.ndarray) -> dict:
        from lugha.training.evaluate import evaluate_embeddings

        rep = evaluate_embeddings(self.data.pairs, img, self.eval_txt, self.encode, self.data.label_names)
        return {lang: {k: float(m[k]) for k in ("i2t_r1", "t2i_r1")} for lang, m in rep["languages"].items()}

    def measure(self, runner) -> dict:
        from lugha.export.graph_runners import batched

        out = {"cosine": cosines(self.ref, batched(runner, {"pixel_values": self.pixels}, 32)["image_embeds"])}
        img = batched(runner, {"pixel_values": self.data.pixels}, 32)["image_embeds"]
        got = self.metrics(img)
        drops = {m: {lang: round(100 * (ref[m] - got[lang][m]), 2) for lang, ref in self.ref_metrics.items()}
                 for m in ("i2t_r1", "t2i_r1")}
        out["eval_cosine"] = cosines(self.eval_img, img)
        over = {m: sorted(k for k, v in d.items() if v > self.max_drop + 1e-9) for m, d in drops.items()}
        out["r1_drop_points"] = {m: {"max": max(d.values()), "mean": round(float(np.mean(list(d.values()))), 2),
                                     "languages_over_max_drop": over[m]}
                                 for m, d in drops.items()}
        return out


    def noise_floor(self, cosine: float, draws: int = 40, seed: int = 0) -> dict:
        """What the accuracy gate sees when the fp32 eval-split image embeddings only get random noise of
        the size that leaves them at mean ``cosine`` to fp32 (isotropic, so no systematic error): the
        chance that some language/metric cell drops more than ``max_drop`` points, from sampling alone."""
        e = self.eval_img.astype(np.float64)
        rng, sigma = np.random.default_rng(seed), float(np.sqrt(2 * (1 - cosine)))
        worst, over = [], []
        for _ in range(draws):
            n = rng.standard_normal(e.shape)
            n *= sigma * np.linalg.norm(e, axis=1, keepdims=True) / np.linalg.norm(n, axis=1, keepdims=True)
            got = self.metrics((e + n).astype(np.float32))
            drops = [100 * (r[m] - got[lang][m]) for lang, r in self.ref_metrics.items() for m in ("i2t_r1", "t2i_r1")]
            worst.append(max(drops))
            over.append(sum(d > self.max_drop + 1e-9 for d in drops))
        return {"cosine": round(cosine, 5), "draws": draws, "cells": 2 * len(self.ref_metrics),
                "p_any_cell_over_max_drop": round(float(np.mean(np.array(over) > 0)), 3),
                "mean_cells_over": round(float(np.mean(over)), 2),
                "median_max_drop": round(float(np.median(worst)), 2)}


def latency_ms(run_one, pixels: np.ndarray, repeats: int = 20) -> float:
    """Median ms of one batch-1 image after a warm-up (single-threaded runners)."""
    return feeds_latency_ms(run_one, {"pixel_values": pixels[:1]}, repeats)


def feeds_latency_ms(run_one, feeds: dict, repeats: int = 20) -> float:
    """Median ms of ``run_one(feeds)`` over ``repeats`` runs after 3 warm-up runs."""
    for _ in range(3):
        run_one(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_one(feeds)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def onnx_rows(bench: Bench, calib_for, work: Path, say, variants, base: dict) -> list[dict]:
    import onnx

    from lugha.export.graph_runners import onnx_runner
    from lugha.export.onnx_export import export_onnx
    from lugha.export.onnx_quant import convert_fp16, quantize_image_static

    def row(label, path, **extra):
        out = {"format": "onnx", "variant": label, **extra, "size_mb": round(path.stat().st_size / 1e6, 3),
               "ms_batch1_1thread": latency_ms(onnx_runner(path, threads=1), bench.pixels),
               **bench.measure(onnx_runner(path))}
        say(_line("onnx", label, out))
        return out

    fp32 = work / "image.fp32.onnx"
    export_onnx(bench.spec, bench.source.model, {"pixel_values": bench.pixels[:2]}, fp32, bench.source.layout)
    heads = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ("Gemm", "MatMul")]
    convert_fp16(fp32, work / "image.fp16.onnx")
    rows = [row(p, work / f"image.{p}.onnx") for p in ("fp32", "fp16")]
    for label, change in variants:
        o = {**base, **change}
        dst, start = work / "int8.onnx", time.monotonic()
        report = quantize_image_static(fp32, dst, calib_for(o["calib"]), o["method"], o["per_channel"],
                                       heads if o["exclude"] == "proj" else [], o["activations"], o["percentile"],
                                       o["rounding"], o["reduce_range"], o["float_stem"])
        rows.append(row(label, dst, options=o, default=not change, calib_images=o["calib"],
                        quantize_seconds=round(time.monotonic() - start, 1), quantization=report.to_dict()))
    return rows


def tflite_rows(bench: Bench, calib_for, work: Path, say, variants, base: dict) -> list[dict]:
    from lugha.export.graph_runners import tflite_runner
    from lugha.export.tflite_export import convert_float
    from lugha.export.tflite_int8 import convert_image_int8_pt2e

    spec, model, layout = bench.spec, bench.source.model, bench.source.layout
    sample = {"pixel_values": bench.pixels[:1]}

    def row(label, path, **extra):
        out = {"format": "tflite", "variant": label, **extra, "size_mb": round(path.stat().st_size / 1e6, 3),
               "ms_batch1_1thread": latency_ms(tflite_runner(path, spec, threads=1), bench.pixels),
               **bench.measure(tflite_runner(path, spec))}
        say(_line("tflite", label, out))
        return out

    rows = [row("fp32", convert_float(spec, model, sample, work / "image.fp32.tflite", layout).path)]
    for label, change in variants:
        done = convert_image_int8_pt2e(spec, model, sample, work / "int8.tflite", calib_for(base["calib"]), layout,
                                       **change)
        rows.append(row(label, done.path, options=change, default=not change, calib_images=base["calib"],
                        quantize_seconds=round(done.seconds, 1), quantization=done.quantization))
    return rows


def _line(fmt: str, label: str, row: dict) -> str:
    drop = row["r1_drop_points"]
    return (f"{fmt:6s} {label:70s} cos mean {row['cosine']['mean']:.4f} min {row['cosine']['min']:.4f}  "
            f"R@1 drop max i2t {drop['i2t_r1']['max']:.2f} t2i {drop['t2i_r1']['max']:.2f} "
            f"({len(drop['i2t_r1']['languages_over_max_drop'])}+{len(drop['t2i_r1']['languages_over_max_drop'])} "
            f"languages over)  {row['size_mb']:.2f} MB  {row['ms_batch1_1thread']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a training run folder (its model, manifest and splits)")
    ap.add_argument("--images", help="measure cosines on images of this manifest the run does not hold "
                                     "(default: the run's eval split)")
    ap.add_argument("--n", type=int, default=100, help="held-out images to measure on (with --images)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", default="onnx,tflite")
    ap.add_argument("--quick", action="store_true", help="only the default int8 row of each format (and fp32/fp16)")
    ap.add_argument("--out", default="int8_image_tower.json")
    ap.add_argument("--calib", type=int, default=DEFAULT["calib"],
                    help=f"calibration images of every row but the calibration-size one (default "
                         f"{DEFAULT['calib']}, what `lugha export` uses; each row records its calib_images)")
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of formats not in --formats from an existing --out (rerun one format)")
    ap.add_argument("--noise-draws", type=int, default=40,
                    help="random-noise draws for the gate's noise floor at each default row's cosine (0: skip)")
    args = ap.parse_args(argv)
    from lugha.export.source import calibration_batches, load_run_source
    from lugha.export.specs import SPECS
    from lugha.preprocess import preprocess_batch

    say = lambda m: print(m, flush=True)  # noqa: E731
    base = {**DEFAULT, "calib": args.calib}  # this invocation's recipe; DEFAULT is `lugha export`'s
    source = load_run_source(args.run)
    spec = SPECS["image_encoder"]
    pixels = (preprocess_batch(heldout_images(Path(args.images), source.manifest, args.n, args.seed),
                               source.preprocess) if args.images else None)
    bench = Bench(source, spec, pixels)
    cache: dict[int, list[np.ndarray]] = {}

    def calib_for(n: int) -> list[np.ndarray]:  # what `lugha export --calib-samples n` calibrates on
        return cache.setdefault(n, calibration_batches(source, n))

    report = {"run": str(args.run), "model": source.model_cfg.name, "trained": source.trained,
              "measured_on": args.images or f"eval split '{bench.split}' of {source.manifest}",
              "measured_images": int(len(bench.pixels)), "eval_split": bench.split,
              "eval_rows": len(bench.data.pairs.records), "languages": list(bench.data.pairs.languages),
              "default_options": base, "max_drop_points": bench.max_drop,
              "reference": "PyTorch fp32 image_encoder (tower + projection) on the same images; R@1 drops "
                           "use fp32 PyTorch text embeddings, so only the image graph changes",
              "timing": "ms_batch1_1thread: median of 20 batch-1 runs, 1 thread, on the machine that ran this",
              "ref_r1": bench.ref_metrics, "rows": [], "table": []}
    formats = args.formats.split(",")
    if args.update and Path(args.out).is_file():  # rows of the other formats, as an earlier run measured them
        report["rows"] = [r for r in json.loads(Path(args.out).read_text())["rows"] if r["format"] not in formats]
    with tempfile.TemporaryDirectory(prefix="lugha-int8-bench-") as tmp:
        for fmt in formats:
            rows, variants = (onnx_rows, onnx_variants(args.calib)) if fmt == "onnx" else (tflite_rows, TFLITE_VARIANTS)
            chosen = [v for v in variants if not v[1]] if args.quick else variants  # the default: no changes
            # each row names its run: with --update the kept rows may come from an earlier one
            report["rows"] += [{**r, "run": str(args.run)} for r in rows(bench, calib_for, Path(tmp), say, chosen, base)]
            report["table"] = [_line(r["format"], r["variant"], r) for r in report["rows"]]
            Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.noise_draws:
        defaults = sorted({r["eval_cosine"]["mean"] for r in report["rows"]  # (rows of older runs: by label)
                           if r.get("default") or r["variant"].startswith("default")} | {0.9999})
        report["noise_floor"] = {"what": "isotropic noise on the fp32 eval-split image embeddings at each cosine: "
                                         "how often the gate would fail from sampling alone",
                                 "rows": [bench.noise_floor(c, args.noise_draws) for c in defaults]}
        for r in report["noise_floor"]["rows"]:
            say(f"noise floor at cosine {r['cosine']}: P(some cell > {bench.max_drop} points) "
                f"{r['p_any_cell_over_max_drop']:.2f}, median worst drop {r['median_max_drop']:.2f} points")
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
