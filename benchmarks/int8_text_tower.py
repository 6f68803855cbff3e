"""int8 text tower variants: cosine to fp32 PyTorch on the eval split's texts, per-language R@1 and label
accuracy drops, size, batch-1 latency (with PyTorch eager fp32 timed in the same run as the baseline).

  python benchmarks/int8_text_tower.py --run runs/default --out benchmarks/int8_text_tower.json
  python benchmarks/int8_text_tower.py --run runs/default --formats onnx --quick --out /tmp/t.json

Calibration uses the run's training texts, chosen as ``lugha export`` chooses them. Drops are the export
gate's metrics with fp32 PyTorch image embeddings, so only the text graph changes. Every ONNX row is
:func:`lugha.export.text_int8.quantize_text_per_token` with one knob changed from the default (the first
int8 row), or onnxruntime's stock ``quantize_dynamic``; TFLite rows are ai-edge-quantizer's dynamic int8
without and with the SmoothQuant-ed tower. Tens of minutes on 2 CPU cores; a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_image_tower import cosines, feeds_latency_ms as latency_ms  # noqa: E402

ONNX_VARIANTS = [  # (label, quantize_text_per_token kwargs, or "dynamic" / "fp32")
    ("fp32", "fp32"),
    ("default: per-token u8 activations + SmoothQuant 0.5 + GPTQ weights", {}),
    ("per-token, round-to-nearest weights", {"rounding": "nearest"}),
    ("per-token, no SmoothQuant", {"alpha": 0.0}),
    ("per-token-fine: two-pass activations (~16-bit), GPTQ weights", {"fine": True}),
    ("stock onnxruntime quantize_dynamic (one activation scale per tensor)", "dynamic"),
]
TFLITE_VARIANTS = [("stock ai-edge-quantizer dynamic int8", False), ("SmoothQuant-ed tower + dynamic int8: default", True)]
SEQ = 16  # batch-1 latency on a 16-token text (the demo captions' p90 is 14 tokens)


class Bench:
    """fp32 reference once: PyTorch image and text embeddings of the eval split; variants re-embed texts."""

    def __init__(self, source, max_drop: float = 1.0):
        from lugha.export import gates
        from lugha.export.specs import reference_runner as torch_runner
        from lugha.export.source import eval_pairs, token_encoder
        from lugha.export.specs import SPECS
        from lugha.preprocess import preprocess_batch
        from lugha.training.evaluate import load_label_names

        self.source, self.max_drop = source, max_drop
        pairs, self.split = eval_pairs(source, "test")
        self.data = gates.EvalData(pairs, preprocess_batch(pairs.image_paths, source.preprocess),
                                   token_encoder(source.tokenizer), load_label_names(source.manifest)[0])
        self.torch_text = torch_runner(SPECS["text_encoder"], source.model)
        image = torch_runner(SPECS["image_encoder"], source.model, source.layout)
        self.img, self.txt, _ = gates.embed_eval(self.data, image, self.torch_text)
        self.ref_metrics = self.metrics(self.torch_text)

    def metrics(self, text_runner) -> tuple[dict, np.ndarray]:
        from lugha.export import gates
        from lugha.training.evaluate import evaluate_embeddings

        _, txt, encode = gates.embed_eval(gates.EvalData(self.data.pairs, self.data.pixels[:1], self.data.encode_tokens,
                                                         self.data.label_names),
                                          lambda x: {"image_embeds": np.zeros((len(x["pixel_values"]), 1), np.float32)},
                                          text_runner)
        rep = evaluate_embeddings(self.data.pairs, self.img, txt, encode, self.data.label_names)
        keys = [k for k in ("i2t_r1", "t2i_r1", "label_acc") if k in next(iter(rep["languages"].values()))]
        return {lang: {k: float(m[k]) for k in keys} for lang, m in rep["languages"].items()}, txt

    def measure(self, runner) -> dict:
        got, txt = self.metrics(runner)
        ref = self.ref_metrics[0]
        out = {"cosine": cosines(self.txt, txt), "drop_points": {}}
        for m in next(iter(ref.values())):
            d = {lang: round(100 * (ref[lang][m] - got[lang][m]), 2) for lang in ref}
            out["drop_points"][m] = {"max": max(d.values()), "mean": round(float(np.mean(list(d.values()))), 2),
                                     "languages_over_max_drop": sorted(k for k, v in d.items() if v > self.max_drop + 1e-9)}
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a training run folder (its model, manifest and splits)")
    ap.add_argument("--formats", default="onnx,tflite")
    ap.add_argument("--calib-texts", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="fp32 and the default int8 row only")
    ap.add_argument("--out", default="int8_text_tower.json")
    args = ap.parse_args(argv)
    import torch

    from lugha.export.graph_runners import onnx_runner, tflite_runner
    from lugha.export.onnx_export import export_onnx
    from lugha.export.onnx_quant import quantize_text_dynamic
    from lugha.export.source import calibration_texts, load_run_source
    from lugha.export.specs import SPECS
    from lugha.export.text_int8 import quantize_text_per_token
    from lugha.export.tflite_export import export_tflite

    torch.set_num_threads(1)
    say = lambda m: print(m, flush=True)  # noqa: E731
    source = load_run_source(args.run)
    bench = Bench(source)
    calib = calibration_texts(source, args.calib_texts)
    spec = SPECS["text_encoder"]
    ids, mask = bench.data.encode_tokens(["a b c d e f g h i j k l m n"])
    feeds = {"input_ids": np.resize(ids, (1, SEQ)), "attention_mask": np.ones((1, SEQ), np.int64)}
    torch_ms = latency_ms(bench.torch_text, feeds)
    say(f"PyTorch eager fp32, batch 1 x {SEQ} tokens, 1 thread: {torch_ms} ms")
    report = {"run": str(args.run), "model": source.model_cfg.name, "eval_split": bench.split,
              "eval_texts": len(bench.data.pairs.records), "languages": list(bench.data.pairs.languages),
              "calibration_texts": args.calib_texts, "max_drop_points": bench.max_drop,
              "reference": "PyTorch fp32 text_encoder; drops use fp32 PyTorch image embeddings",
              "timing": f"median of 20 batch-1 runs of {SEQ} tokens, 1 thread, after 3 warm-ups, this machine",
              "torch_eager_fp32_ms": torch_ms, "rows": []}
    with tempfile.TemporaryDirectory(prefix="lugha-text-int8-") as tmp:
        work = Path(tmp)
        fp32 = export_onnx(spec, source.model, {k: v for k, v in zip(("input_ids", "attention_mask"), calib[0])},
                           work / "fp32.onnx").path
        rows = [("onnx", label, kw) for label, kw in ONNX_VARIANTS] if "onnx" in args.formats else []
        rows += [("tflite", label, smooth) for label, smooth in TFLITE_VARIANTS] if "tflite" in args.formats else []
        if args.quick:
            rows = [r for r in rows if r[2] in ("fp32", {}, True)]
        for i, (fmt, label, kw) in enumerate(rows):
            start = time.monotonic()
            path = work / f"v{i}.{fmt}"
            if fmt == "onnx":
                if kw == "fp32":
                    path = fp32
                elif kw == "dynamic":
                    quantize_text_dynamic(fp32, path)
                else:
                    quantize_text_per_token(fp32, path, calib, **kw)
                runner, threaded = onnx_runner(path), onnx_runner(path, threads=1)
            else:
                export_tflite(spec, source.model, "int8", {"input_ids": calib[0][0][:2], "attention_mask": calib[0][1][:2]},
                              path, seq_lengths=(SEQ, source.model_cfg.text_tower.max_length),
                              text_calib=calib if kw else ())
                pads = {"input_ids": int(source.tokenizer.pad_id)}
                runner, threaded = tflite_runner(path, spec, pads), tflite_runner(path, spec, pads, threads=1)
            seconds = round(time.monotonic() - start, 1)
            row = {"format": fmt, "variant": label, "size_mb": round(path.stat().st_size / 1e6, 2),
                   "quantize_s": seconds, **bench.measure(runner)}
            row["ms_batch1"] = latency_ms(threaded, feeds)
            row["x_torch"] = round(row["ms_batch1"] / torch_ms, 3)
            report["rows"].append(row)
            d = row["drop_points"]
            say(f"{fmt:6s} {label:72s} cos {row['cosine']['mean']:.5f} / min {row['cosine']['min']:.4f}  drops max "
                + " ".join(f"{m} {v['max']:.2f} ({len(v['languages_over_max_drop'])} over)" for m, v in d.items())
                + f"  {row['size_mb']} MB  {row['ms_batch1']} ms ({row['x_torch']}x torch)")
            Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
