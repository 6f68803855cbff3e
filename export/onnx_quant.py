"""ONNX quantization with onnxruntime: dynamic int8 (text), static int8 QDQ (image), fp16 (any).

* Text towers: ``quantize_dynamic`` int8 per-channel for the MatMuls (activations are quantized on the
  fly, nothing to calibrate), and the embedding tables, which ORT's dynamic Gather path would quantize
  with ONE scale for all 250 k rows, get a weight-only int8 path with one scale per row instead
  (``Gather(int8 table) -> Cast -> Mul(Gather(row scales))``): rows are read, never the whole table.
* Image towers: ``quantize_static`` QDQ, int8 weights per output channel (symmetric), uint8 asymmetric
  activations per tensor calibrated on real training images (Percentile 99.9999 by default); nodes the
  advisor flags stay in float. Then the int8 weights of every k x k kernel are re-rounded so that each
  kernel keeps its float sum (:func:`round_keep_kernel_sums`): plain rounding shifts a depthwise 3x3
  kernel's sum by up to 4.5 steps, and on flat image regions (skies, walls, emoji) that sum is the whole
  response, so the error lands as a per-channel offset a ReLU6 then amplifies. On EfficientNet-Lite0 this
  took the mean cosine to fp32 from 0.988 to 0.997 on 100 held-out images, and Percentile 99.9999
  (over 99.999, 99.99, MinMax, Entropy) the worst image from 0.98 to 0.99 (benchmarks/int8_image_tower.json).
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
ACTIVATIONS = {"uint8": "uint8 asymmetric per tensor", "int8": "int8 symmetric per tensor",
               "int16": "int16 symmetric per tensor (w8a16)"}
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
                          nodes_to_exclude: Sequence[str] = (), activations: str = "uint8",
                          percentile: float = 99.9999, keep_kernel_sums: bool = True,
                          reduce_range: bool = False) -> QuantReport:
    """Static int8 QDQ calibrated on ``batches`` of real preprocessed images. ``activations``:
    ``uint8`` (asymmetric: the default, measured best on Lite0), ``int8`` (symmetric signed, what some
    NPUs want) or ``int16`` (w8a16: 8-bit weights, 16-bit activations, for towers whose activations do not
    fit 8 bits). ``keep_kernel_sums``: re-round k x k kernels so each keeps its float sum (see the module
    docstring). ``reduce_range`` (7-bit weights) is off by default: it costs Lite0 0.04 of cosine and only
    helps pre-VNNI x86 int8 kernels."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise QuantizationError(f"calibration method {method!r}: expected one of {CALIB_METHODS}")
    if not batches:
        raise QuantizationError("static quantization needs calibration images; none were given")
    calib = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
             "minmax": CalibrationMethod.MinMax}[method]
    if activations not in ACTIVATIONS:
        raise QuantizationError(f"activations {activations!r}: expected one of {list(ACTIVATIONS)}")
    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "int16": QuantType.QInt16}[activations]
    extra = {"ActivationSymmetric": activations != "uint8", "WeightSymmetric": True,
             "CalibMovingAverage": False}
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    if activations == "int16":
        extra["UseQDQContribOps"] = True  # 16-bit Q/DQ are contrib ops before opset 21
    rerounded = 0
    with tempfile.TemporaryDirectory(prefix="lugha-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _pre_process(Path(src).resolve(), pre)
        with _in_dir(Path(tmp)):
            quantize_static(str(pre), str(Path(dst).resolve()), ImageCalibrationReader(batches),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=calib,
                            nodes_to_exclude=list(nodes_to_exclude), extra_options=extra)
        if keep_kernel_sums:
            rerounded = reround_conv_weights(dst, pre)
    n_images = int(sum(len(b) for b in batches))
    rounding = (f"; k x k kernels re-rounded to keep each kernel's sum ({rerounded} convs)" if rerounded
                else "; round to nearest")
    return QuantReport(f"int8 static QDQ (onnxruntime quantize_static, {method} calibration)", {
        "weights": f"int8 {'per channel' if per_channel else 'per tensor'}, symmetric{rounding}",
        "activations": ACTIVATIONS[activations],
        "calibration_images": n_images, "calibration_method": method,
        **({"calibration_percentile": float(percentile)} if method == "percentile" else {}),
        "reduce_range": reduce_range, "pre_process": "onnxruntime quant_pre_process (shape inference, Conv+BatchNorm fused)",
        "nodes_kept_float": len(nodes_to_exclude)})


def round_keep_kernel_sums(w: np.ndarray, scale: np.ndarray, qmin: int = -127, qmax: int = 127) -> np.ndarray:
    """Integer weights of ``w`` ([out, in, kh, kw], ``scale`` per output channel) rounded to nearest,
    then, per (out, in) kernel, the taps nearest to their other rounding moved one step until the kernel's
    integer sum is the float sum rounded (largest-remainder rounding). Each tap stays within one step of
    its float value; 1x1 kernels (one tap) are plain rounding."""
    v = w.astype(np.float64) / np.asarray(scale, np.float64).reshape(-1, *([1] * (w.ndim - 1)))
    r = np.clip(np.rint(v), qmin, qmax)
    if w.ndim != 4 or w.shape[2] * w.shape[3] == 1:
        return r
    v, r = v.reshape(*w.shape[:2], -1), r.reshape(*w.shape[:2], -1)
    moves = np.rint(v.sum(-1) - r.sum(-1))[..., None]  # > 0: that many taps go up one step, < 0: down
    frac = v - r
    can_up, can_down = r + 1 <= qmax, r - 1 >= qmin
    # rank taps by how close they were to rounding the other way (stable, so ties go to the first tap)
    rank_up = np.argsort(np.argsort(np.where(can_up, -frac, np.inf), -1, kind="stable"), -1, kind="stable")
    rank_down = np.argsort(np.argsort(np.where(can_down, frac, np.inf), -1, kind="stable"), -1, kind="stable")
    r = r + ((rank_up < moves) & can_up) - ((rank_down < -moves) & can_down)
    return r.reshape(w.shape)


def reround_conv_weights(quantized: str | Path, float_model: str | Path) -> int:
    """Rewrite in place the int8 weights of every k x k ``Conv`` of a QDQ graph with
    :func:`round_keep_kernel_sums`, reading the float weights from the graph it was quantized from and
    keeping the quantizer's scales. Returns how many convs were rewritten."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(quantized))
    floats = {t.name: t for t in onnx.load(str(float_model)).graph.initializer}
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    done = 0
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        q_name = dq.input[0]
        source = floats.get(q_name[:-len("_quantized")] if q_name.endswith("_quantized") else "")
        q, scale = numpy_helper.to_array(inits[q_name]), numpy_helper.to_array(inits[dq.input[1]])
        if source is None or q.dtype != np.int8 or q.ndim != 4 or q.shape[2] * q.shape[3] == 1:
            continue
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else 0
        if np.any(zero != 0) or scale.shape not in ((q.shape[0],), ()):
            continue  # only the symmetric per-channel (or per-tensor) weights quantize_static writes
        scale = np.broadcast_to(scale, (q.shape[0],))
        new = round_keep_kernel_sums(numpy_helper.to_array(source), scale).astype(np.int8)
        inits[q_name].CopyFrom(numpy_helper.from_array(new, q_name))
        done += 1
    onnx.save(model, str(quantized))
    return done


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
           "round_keep_kernel_sums", "reround_conv_weights", "float_weights", "ImageCalibrationReader",
           "QuantReport", "QuantizationError", "CALIB_METHODS"]
