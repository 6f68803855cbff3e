"""ONNX quantization with onnxruntime: dynamic int8 (text), static int8 QDQ (image), fp16 (any).

* Text towers: ``quantize_dynamic`` int8 per-channel for the MatMuls (activations are quantized on the
  fly, nothing to calibrate), and the embedding tables, which ORT's dynamic Gather path would quantize
  with ONE scale for all 250 k rows, get a weight-only int8 path with one scale per row instead
  (``Gather(int8 table) -> Cast -> Mul(Gather(row scales))``): rows are read, never the whole table.
* Image towers: ``quantize_static`` QDQ, int8 weights per output channel, uint8 activations calibrated
  (Percentile or Entropy) on real training images; nodes the advisor flags stay in float.
* fp16: every float initializer and op to float16 with float32 inputs and outputs kept.

``quant_pre_process`` (shape inference + ORT graph optimisation) runs before the quantizers, in a
temporary folder removed whatever happens.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lugha.errors import LughaError

# A Gather whose float table has at least this many elements is an embedding table worth quantizing.
EMBEDDING_MIN_ELEMENTS = 1 << 16
CALIB_METHODS = ("percentile", "entropy", "minmax")
ROW_SCALE = "_row_scale"  # suffix of the float per-row scales of an int8 embedding table


class QuantizationError(LughaError):
    """A quantizer failed or produced a graph that is not what was asked for."""


@dataclass
class QuantReport:
    """What was done to a graph, for GraphSpec.quantization and the model card."""

    scheme: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, **self.details}


@contextlib.contextmanager
def _in_dir(folder: Path):
    """ORT's quantization tools drop scratch files (``sym_shape_infer_temp.onnx``, ``<uuid>.data``,
    ``augmented_model.onnx``) in the working directory: run them inside the temporary folder, quietly."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.chdir(old)


def _pre_process(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import quant_pre_process

    with _in_dir(dst.parent):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ONNX's own works
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_text_dynamic(src: str | Path, dst: str | Path, per_channel: bool = True,
                          nodes_to_exclude: Sequence[str] = ()) -> QuantReport:
    """Dynamic int8: MatMul weights per channel; embedding tables int8 per row (weight-only Gather)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="lugha-quant-") as tmp:
        pre, mid = Path(tmp) / "pre.onnx", Path(tmp) / "mid.onnx"
        _pre_process(Path(src).resolve(), pre)
        model = onnx.load(str(pre))
        tables = quantize_embedding_gathers(model)
        onnx.save(model, str(mid))
        with _in_dir(Path(tmp)):
            quantize_dynamic(str(mid), str(Path(dst).resolve()), op_types_to_quantize=["MatMul"],
                             per_channel=per_channel, weight_type=QuantType.QInt8,
                             nodes_to_exclude=list(nodes_to_exclude))
    left = float_weights(onnx.load(str(dst)))
    big = {k: v for k, v in left.items() if v >= EMBEDDING_MIN_ELEMENTS and not k.endswith(ROW_SCALE)}
    if big:  # a large float weight left means the int8 file is not what its name promises
        name = max(big, key=big.get)
        raise QuantizationError(f"{dst}: float weight {name} ({big[name]:,} values) was not quantized")
    return QuantReport("int8 dynamic (onnxruntime quantize_dynamic)", {
        "matmul": f"int8 weights {'per channel' if per_channel else 'per tensor'}, activations per call",
        "embeddings": {name: f"int8 per-row weight-only Gather ({n:,} values)" for name, n in tables.items()},
        "gather_quantized": bool(tables), "nodes_kept_float": list(nodes_to_exclude)})


def float_weights(model) -> dict[str, int]:
    """Float initializers with their element counts."""
    from onnx import TensorProto

    return {t.name: int(np.prod(t.dims)) for t in model.graph.initializer
            if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}


def quantize_embedding_gathers(model, min_elements: int = EMBEDDING_MIN_ELEMENTS) -> dict[str, int]:
    """Rewrite in place every ``Gather(float table, ids)`` with a big 2-D table as
    ``Mul(Cast(Gather(int8 table, ids)), Gather(row scales, ids))``: symmetric int8, one scale per row.
    Returns the rewritten tables and their sizes."""
    from onnx import helper, numpy_helper, TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    done: dict[str, int] = {}
    new_nodes = []
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (table is None or table.data_type != TensorProto.FLOAT or len(table.dims) != 2
                or int(np.prod(table.dims)) < min_elements or attrs.get("axis", 0) != 0):
            new_nodes.append(node)
            continue
        name = table.name
        if name not in done:
            w = numpy_helper.to_array(table).astype(np.float32)
            scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            model.graph.initializer.remove(table)
            model.graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"),
                                            numpy_helper.from_array(scale.astype(np.float32), name + ROW_SCALE)])
            done[name] = int(w.size)
        out, ids, tag = node.output[0], node.input[1], f"{node.name or out}_wq"
        new_nodes += [
            helper.make_node("Gather", [name + "_int8", ids], [tag + "_q"], name=tag + "_gather", axis=0),
            helper.make_node("Gather", [name + ROW_SCALE, ids], [tag + "_s"], name=tag + "_gather_scale", axis=0),
            helper.make_node("Cast", [tag + "_q"], [tag + "_f"], name=tag + "_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [tag + "_f", tag + "_s"], [out], name=tag + "_mul"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return done


class ImageCalibrationReader:
    """onnxruntime CalibrationDataReader over preprocessed image batches (``[B, ...]`` float32)."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "pixel_values"):
        self._batches = list(batches)
        self._it: Iterator[np.ndarray] = iter(self._batches)
        self.input_name = input_name

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_image_static(src: str | Path, dst: str | Path, batches: Sequence[np.ndarray],
                          method: str = "percentile", per_channel: bool = True,
                          nodes_to_exclude: Sequence[str] = (), activations: str = "uint8") -> QuantReport:
    """Static int8 QDQ calibrated on ``batches`` of real preprocessed images. ``activations``:
    ``uint8`` (int8 everywhere, the usual) or ``int16`` (w8a16: 8-bit weights, 16-bit activations, for
    towers whose activations do not fit 8 bits)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise QuantizationError(f"calibration method {method!r}: expected one of {CALIB_METHODS}")
    if not batches:
        raise QuantizationError("static quantization needs calibration images; none were given")
    calib = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
             "minmax": CalibrationMethod.MinMax}[method]
    act = {"uint8": QuantType.QUInt8, "int16": QuantType.QInt16}[activations]
    extra = {"ActivationSymmetric": activations == "int16", "WeightSymmetric": True,
             "CalibMovingAverage": False}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if activations == "int16":
        extra["UseQDQContribOps"] = True  # 16-bit Q/DQ are contrib ops before opset 21
    with tempfile.TemporaryDirectory(prefix="lugha-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _pre_process(Path(src).resolve(), pre)
        with _in_dir(Path(tmp)):
            quantize_static(str(pre), str(Path(dst).resolve()), ImageCalibrationReader(batches),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=act,
                            weight_type=QuantType.QInt8, calibrate_method=calib,
                            nodes_to_exclude=list(nodes_to_exclude), extra_options=extra)
    n_images = int(sum(len(b) for b in batches))
    return QuantReport(f"int8 static QDQ (onnxruntime quantize_static, {method} calibration)", {
        "weights": f"int8 {'per channel' if per_channel else 'per tensor'}, symmetric",
        "activations": activations, "calibration_images": n_images, "calibration_method": method,
        "nodes_kept_float": len(nodes_to_exclude)})


def convert_fp16(src: str | Path, dst: str | Path, op_block_list: Sequence[str] | None = None) -> QuantReport:
    """float16 weights and compute, float32 inputs/outputs (so host code is the same for every precision).
    onnxconverter-common's converter when installed, else onnxruntime's copy of it."""
    import onnx

    try:
        from onnxconverter_common.float16 import convert_float_to_float16
        source = "onnxconverter-common"
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        source = "onnxruntime.transformers.float16"
    model = onnx.load(str(src))
    kwargs = {"keep_io_types": True}
    if op_block_list is not None:
        kwargs["op_block_list"] = list(op_block_list)
    fp16 = convert_float_to_float16(model, **kwargs)
    onnx.save(fp16, str(dst))
    return QuantReport(f"fp16 ({source}, float32 I/O kept)")


__all__ = ["quantize_text_dynamic", "quantize_image_static", "convert_fp16", "quantize_embedding_gathers",
           "float_weights", "ImageCalibrationReader", "QuantReport", "QuantizationError", "CALIB_METHODS"]
