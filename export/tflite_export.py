"""PyTorch -> TFLite (LiteRT) with litert-torch: static shapes, fp32 / fp16 / int8.

* Shapes are static, batch 1 (what NNAPI/GPU delegates and microcontrollers need). The text encoder gets
  one signature per sequence length, ``seq_<L>`` (weights are shared between signatures); the runtime
  pads a text up to the smallest L that fits. Images and heads have one ``serving_default`` signature.
* int8, image tower: PT2E static quantization calibrated on real training images, lowered by
  litert-torch, with the image-tower recipe of :mod:`lugha.export.image_int8` (float stem, GPTQ
  rounding): :mod:`lugha.export.tflite_int8`.
* int8, text tower: ai-edge-quantizer dynamic int8 (``dynamic_wi8_afp32``: int8 channelwise weights,
  activations quantized per token at run time) on the fp32 flatbuffer of a SmoothQuant-ed copy of the
  tower (:func:`lugha.export.text_int8.smoothed_text_model`; cosine to fp32 0.9967 -> 0.9992 on the
  demo test texts, benchmarks/int8_text_tower.json).
* fp16: ai-edge-quantizer float casting of the weights (fp16 storage, float compute), I/O float32.

LiteRT has no int64 inputs on most delegates: token ids and masks are int32 in these graphs, and the
bundle's TensorSpecs say so.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lugha.errors import MissingDependencyError
from lugha.manifest import TensorSpec

from lugha.export.specs import ExportSpec
# TfliteExport and TfliteExportError are re-exported: callers know them from here.
from lugha.export.toolchain import TfliteExport, TfliteExportError, litert_torch, quiet, sample_kwargs


def static_inputs(spec: ExportSpec, model, layout: str, seq_length: int | None = None) -> tuple[TensorSpec, ...]:
    """The spec's inputs with batch 1 (and the sequence length), token inputs as int32."""
    dims = {"batch": 1, **({"seq": seq_length} if seq_length else {})}
    out = []
    for t in spec.inputs(model, layout, static=dims):
        out.append(TensorSpec(t.name, "int32" if t.dtype == "int64" else t.dtype, t.shape, t.layout))
    return tuple(out)


def convert_float(spec: ExportSpec, model, sample: dict[str, np.ndarray], path: str | Path, layout: str = "NCHW",
                  seq_lengths: Sequence[int] = ()) -> TfliteExport:
    """fp32 flatbuffer: one ``seq_<L>`` signature per length for token inputs, else ``serving_default``."""
    lt = litert_torch()
    module, start = spec.wrap(model, layout), time.monotonic()
    tokens = any(n in ("input_ids", "attention_mask") for n in spec.input_names())
    try:
        with quiet():
            if tokens:
                if not seq_lengths:
                    raise TfliteExportError(f"{spec.name}: token inputs need at least one sequence length")
                conv = None
                for length in sorted(set(seq_lengths)):
                    kw = sample_kwargs(spec, sample, length)
                    conv = (lt.signature if conv is None else conv.signature)(f"seq_{length}", module, sample_kwargs=kw)
                edge = conv.convert()
                sigs = {f"seq_{n}": [1, n] for n in sorted(set(seq_lengths))}
            else:
                kw = sample_kwargs(spec, sample, None)
                edge = lt.convert(module, sample_kwargs=kw)
                sigs = {"serving_default": list(next(iter(kw.values())).shape)}
            edge.export(str(path))
    except TfliteExportError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TfliteExportError(f"{spec.name}: litert-torch conversion failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    return TfliteExport(spec.name, Path(path), "fp32", time.monotonic() - start, sigs,
                        {"scheme": "fp32 (litert-torch)"})


def quantize_flatbuffer(src: str | Path, dst: str | Path, precision: str) -> dict:
    """ai-edge-quantizer on an fp32 flatbuffer: ``int8`` dynamic (wi8 channelwise, afp32 quantized per
    call) or ``fp16`` (weights cast to float16)."""
    try:
        from ai_edge_quantizer import quantizer as aeq, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName
    except ImportError:
        raise MissingDependencyError("TFLite quantization needs ai-edge-quantizer: pip install 'lugha[export]'") from None
    try:
        with quiet():
            qt = aeq.Quantizer(str(src))
            if precision == "int8":
                qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
                info = {"scheme": "int8 dynamic (ai-edge-quantizer dynamic_wi8_afp32)",
                        "weights": "int8 channelwise", "activations": "float32, quantized per call"}
            elif precision == "fp16":
                qt.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                          algorithm_key=AlgorithmName.FLOAT_CASTING)
                info = {"scheme": "fp16 weights (ai-edge-quantizer float casting)", "compute": "float32"}
            else:
                raise TfliteExportError(f"quantize_flatbuffer: precision {precision!r} is not int8 or fp16")
            result = qt.quantize()
            Path(dst).unlink(missing_ok=True)
            result.export_model(str(dst))
    except (TfliteExportError, MissingDependencyError):
        raise
    except Exception as e:  # noqa: BLE001
        raise TfliteExportError(f"{src}: ai-edge-quantizer {precision} failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    return info


def export_tflite(spec: ExportSpec, model, precision: str, sample: dict[str, np.ndarray], path: str | Path,
                  layout: str = "NCHW", seq_lengths: Sequence[int] = (),
                  calib_batches: Sequence[np.ndarray] = (), rounding: str = "gptq",
                  float_stem: str | int = "auto", text_calib: Sequence[tuple] = ()) -> TfliteExport:
    """One TFLite graph of ``spec`` at ``precision`` (see the module docstring for what each means).
    ``rounding``, ``float_stem``: the static int8 recipe (:mod:`lugha.export.image_int8`). ``text_calib``:
    ``(input_ids, attention_mask)`` batches of training texts; given, the text tower's linear layers are
    SmoothQuant-ed before the dynamic int8 (:func:`lugha.export.text_int8.smoothed_text_model`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if precision == "int8" and spec.quant_scheme == "static":
        from lugha.export.graph_runners import io_quantization
        from lugha.export.tflite_int8 import convert_image_int8_pt2e

        done = convert_image_int8_pt2e(spec, model, sample, path, calib_batches, layout, rounding=rounding,
                                       float_stem=float_stem)

        io = io_quantization(path, spec)
        if io:  # int8 graph tensors at the boundary: the runtime (de)quantizes them with these parameters
            done.quantization["io"] = io
            done.quantization["io_note"] = ("int8 graph tensors at the boundary: quantize float inputs and "
                                            "dequantize outputs with each tensor's scale/zero_point (TFLite "
                                            "full-integer convention); the logical I/O stays float32")
        return done
    if precision == "fp32" or (precision == "int8" and spec.quant_scheme == "none"):
        done = convert_float(spec, model, sample, path, layout, seq_lengths)
        if precision == "int8":
            done.precision = "int8"
            done.quantization = {"scheme": "none: kept float (see the advisor)"}
        return done
    smooth = precision == "int8" and spec.quant_scheme == "dynamic" and bool(text_calib)
    if smooth:
        from lugha.export.text_int8 import SMOOTH_ALPHA, smoothed_text_model

        model = smoothed_text_model(model, text_calib)
    with tempfile.TemporaryDirectory(prefix="lugha-tflite-") as tmp:
        base = convert_float(spec, model, sample, Path(tmp) / "fp32.tflite", layout, seq_lengths)
        info = quantize_flatbuffer(base.path, path, precision)
    if smooth:
        info["scheme"] = "int8 dynamic, SmoothQuant-ed text tower (ai-edge-quantizer dynamic_wi8_afp32)"
        info["smoothquant_alpha"] = SMOOTH_ALPHA
        info["calibration_texts"] = int(sum(len(ids) for ids, _ in text_calib))
    return TfliteExport(spec.name, path, precision, time.monotonic() - start, base.signatures, info)


__all__ = ["export_tflite", "convert_float", "quantize_flatbuffer", "static_inputs",
           "TfliteExport", "TfliteExportError"]
