"""ONNX quantization with onnxruntime: dynamic int8 (text), static int8 QDQ (image), fp16 (any).

* Text towers: the default is per-token int8 (:mod:`lugha.export.text_int8`); here is the stock path
  (``--text-int8 dynamic``): ``quantize_dynamic`` int8 per-channel for the MatMuls (activations quantized
  on the fly with one scale per tensor, nothing to calibrate). Both give the embedding tables, which
  ORT's dynamic Gather path would quantize with ONE scale for all 250 k rows, a weight-only int8 path
  with one scale per row (``Gather(int8 table) -> Cast -> Mul(Gather(row scales))``): rows are read,
  never the whole table.
* Image towers: ``quantize_static`` QDQ, int8 weights per output channel (symmetric), uint8 asymmetric
  activations per tensor calibrated on real training images (Percentile 99.9999 by default); nodes the
  advisor flags stay float, and so do the stem and the blocks before the first residual connection
  (:func:`float_stem_nodes`). Then the int8 weights are re-rounded with GPTQ on the same images
  (:mod:`lugha.export.image_int8`): each layer's output, not each weight, is kept as close to float as
  the int8 grid allows. Mean cosine to fp32 of EfficientNet-Lite0 on 149 held-out images: 0.980 with
  plain rounding, 0.994 keeping kernel sums, 0.996 with GPTQ, 0.9989 with the float stem as well
  (benchmarks/int8_image_tower.json).
* fp16: every float initializer and op to float16 with float32 inputs and outputs kept.

``quant_pre_process`` (shape inference + ORT graph optimisation) runs before the quantizers, in a
temporary folder removed whatever happens.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lugha.errors import LughaError

from lugha.export.image_int8 import ROUNDINGS, HessianSum, conv_patches, float_stem_length, gptq_round, round_keep_kernel_sums
from lugha.export.toolchain import quiet

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


def _symbolic_shapes(model):
    """ORT's symbolic shape inference, or None where it cannot infer every shape.

    ``SymbolicShapeInference.infer_shapes`` (what ``quant_pre_process`` calls) saves the half-inferred
    model as ``sym_shape_infer_temp.onnx`` into the working directory before it raises: the library must
    not write into the user's folder (nor ``chdir`` away from it: a process-wide change that breaks
    relative paths and threads), so this runs the same steps without that write."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    infer = SymbolicShapeInference(2**31 - 1, False, False, 0)  # quant_pre_process's defaults
    infer._preprocess(model)
    complete = False
    while infer.run_:
        complete = infer._infer_impl()
    infer._update_output_from_vi()
    return infer.out_mp_ if complete else None


def _pre_process(src: Path, dst: Path) -> None:
    """``quant_pre_process`` (shape inference + ORT graph optimisation) into ``dst`` (in a temporary
    folder): symbolic shapes where all can be inferred, ONNX's own shape inference otherwise (symbolic
    inference fails on some graphs). The inferred model is saved beside ``dst`` and optimised from there,
    as ``quant_pre_process`` itself does."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    try:
        with quiet():
            inferred = _symbolic_shapes(onnx.load(str(src)))
    except Exception:  # noqa: BLE001 - an op the symbolic engine does not know: ONNX's inference still works
        inferred = None
    if inferred is not None:
        src = dst.with_name(dst.stem + ".shapes.onnx")
        onnx.save(inferred, str(src))
    with quiet():
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
        with quiet():
            quantize_dynamic(str(mid), str(dst), op_types_to_quantize=["MatMul"],
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
                          percentile: float = 99.9999, rounding: str = "gptq",
                          reduce_range: bool = False, float_stem: str | int = "auto") -> QuantReport:
    """Static int8 QDQ calibrated on ``batches`` of real preprocessed images. ``activations``:
    ``uint8`` (asymmetric: the default, measured best on Lite0), ``int8`` (symmetric signed, what some
    NPUs want) or ``int16`` (w8a16: 8-bit weights, 16-bit activations, for towers whose activations do not
    fit 8 bits). ``rounding`` (:mod:`lugha.export.image_int8`): ``gptq`` (the default, on the same
    images), ``kernel_sum`` or ``nearest``. ``float_stem``: the leading layers kept float
    (:func:`float_stem_nodes`). ``reduce_range`` (7-bit weights) is off by default: it costs Lite0 0.04
    of cosine and only helps pre-VNNI x86 int8 kernels."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise QuantizationError(f"calibration method {method!r}: expected one of {CALIB_METHODS}")
    if rounding not in ROUNDINGS:
        raise QuantizationError(f"rounding {rounding!r}: expected one of {ROUNDINGS}")
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
    import onnx

    with tempfile.TemporaryDirectory(prefix="lugha-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _pre_process(Path(src).resolve(), pre)
        pre_model = onnx.load(str(pre))
        stem = float_stem_nodes(pre_model, float_stem)
        n_stem = sum(1 for n in pre_model.graph.node if n.op_type == "Conv" and (n.name or n.output[0]) in stem)
        del pre_model
        with quiet():
            quantize_static(str(pre), str(dst), ImageCalibrationReader(batches),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=calib,
                            nodes_to_exclude=list(dict.fromkeys([*stem, *nodes_to_exclude])),
                            extra_options=extra)
        done = reround_weights(dst, pre, rounding, batches)
    return QuantReport(f"int8 static QDQ (onnxruntime quantize_static, {method} calibration)", {
        "weights": f"int8 {'per channel' if per_channel else 'per tensor'}, symmetric; {done}",
        "rounding": rounding, "activations": ACTIVATIONS[activations],
        "calibration_images": int(sum(len(b) for b in batches)), "calibration_method": method,
        **({"calibration_percentile": float(percentile)} if method == "percentile" else {}),
        "float_stem": f"{n_stem} leading convs kept float ({float_stem})" if stem else f"none ({float_stem})",
        "reduce_range": reduce_range,
        "pre_process": "onnxruntime quant_pre_process (shape inference, Conv+BatchNorm fused)",
        "nodes_kept_float": len(set(stem) | set(nodes_to_exclude))})


def float_stem_nodes(model, keep: str | int = "auto") -> list[str]:
    """Names of the leading nodes of an image graph kept float (the rule: :func:`float_stem_length`)."""
    nodes, inits = list(model.graph.node), {t.name for t in model.graph.initializer}
    kinds = ["conv" if n.op_type == "Conv" else
             "act" if n.op_type in ("Clip", "Relu") and i and n.input[0] == nodes[i - 1].output[0] else
             "residual_add" if n.op_type == "Add" and len(n.input) == 2 and not set(n.input) & inits else "other"
             for i, n in enumerate(nodes)]
    try:
        return [n.name or n.output[0] for n in nodes[:float_stem_length(kinds, keep)]]
    except ValueError as e:
        raise QuantizationError(str(e)) from None


@dataclass
class _QuantizedLayer:
    node: str
    weight: str  # the int8 initializer
    scale: np.ndarray
    w_float: np.ndarray
    float_input: str  # the layer's input in the float graph
    attrs: dict


def _quantized_layers(model, float_model) -> list[_QuantizedLayer]:
    """Conv/Gemm nodes of a QDQ graph with symmetric int8 per-channel (or per-tensor) weights on axis 0,
    with their float weights and inputs in the graph they were quantized from."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    floats = {t.name: t for t in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node if n.name}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or node.name not in float_nodes:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        dq_axis = {a.name: helper.get_attribute_value(a) for a in dq.attribute}.get("axis", 1)
        source = floats.get(dq.input[0][:-len("_quantized")] if dq.input[0].endswith("_quantized") else "")
        q, scale = numpy_helper.to_array(inits[dq.input[0]]), numpy_helper.to_array(inits[dq.input[1]])
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else 0
        if (source is None or q.dtype != np.int8 or np.any(zero != 0) or scale.shape not in ((q.shape[0],), ())
                or (scale.ndim and dq_axis != 0) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or (node.op_type == "Gemm" and (attrs.get("transB", 0) != 1 or attrs.get("transA", 0)))):
            continue  # only what quantize_static writes for convs and torch Linear layers
        out.append(_QuantizedLayer(node.name, dq.input[0], np.broadcast_to(scale, (q.shape[0],)),
                                   numpy_helper.to_array(source), float_nodes[node.name].input[0], attrs))
    return out


def _input_hessians(float_model, layers: Sequence[_QuantizedLayer], batches) -> dict[str, np.ndarray]:
    """``E[x x^T]`` of every layer's input patches, from the float graph run on ``batches``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph_inputs = {i.name for i in float_model.graph.input}
    wanted = sorted({lay.float_input for lay in layers} - graph_inputs)
    extra = type(float_model)()
    extra.CopyFrom(float_model)
    extra.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in wanted)
    session = ort.InferenceSession(extra.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sums = {lay.node: HessianSum() for lay in layers}
    for batch in batches:
        feeds = {session.get_inputs()[0].name: np.ascontiguousarray(batch, np.float32)}
        values = {**feeds, **dict(zip(names, session.run(None, feeds)))}
        for lay in layers:
            a, x = lay.attrs, values[lay.float_input]
            sums[lay.node].add(conv_patches(x, lay.w_float.shape[2:], a.get("strides", (1, 1)), a.get("pads", (0,) * 4),
                                            a.get("dilations", (1, 1)), a.get("group", 1))
                               if lay.w_float.ndim == 4 else conv_patches(x))
    return {k: s.mean() for k, s in sums.items() if s.rows >= s.total.shape[-1]}  # fewer rows than inputs: skip


def reround_weights(quantized: str | Path, float_model: str | Path, rounding: str = "gptq",
                    batches: Sequence[np.ndarray] = ()) -> str:
    """Rewrite in place the int8 weights of a QDQ graph's convs and linear layers with ``rounding``
    (:mod:`lugha.export.image_int8`), keeping the quantizer's scales; the float weights (and, for
    ``gptq``, the layer inputs on ``batches``) come from the graph it was quantized from. Layers GPTQ
    cannot serve (fewer calibration rows than inputs) keep their kernel sums. Says what was done."""
    import onnx
    from onnx import numpy_helper

    if rounding == "nearest":
        return "round to nearest"
    model, fmodel = onnx.load(str(quantized)), onnx.load(str(float_model))
    layers = _quantized_layers(model, fmodel)
    hessians = _input_hessians(fmodel, layers, batches) if rounding == "gptq" and batches else {}
    inits = {t.name: t for t in model.graph.initializer}
    n_gptq = n_sums = 0
    for lay in layers:
        h = hessians.get(lay.node)
        if h is not None:
            groups = int(lay.attrs.get("group", 1))
            q = gptq_round(lay.w_float, lay.scale, h if groups > 1 else h[0])
            n_gptq += 1
        elif lay.w_float.ndim == 4 and lay.w_float.shape[2] * lay.w_float.shape[3] > 1:
            q, n_sums = round_keep_kernel_sums(lay.w_float, lay.scale), n_sums + 1
        else:
            continue
        inits[lay.weight].CopyFrom(numpy_helper.from_array(q.astype(np.int8), lay.weight))
    onnx.save(model, str(quantized))
    parts = ([f"GPTQ rounding on the calibration images ({n_gptq} layers)"] if n_gptq else []) + (
        [f"k x k kernels re-rounded to keep each kernel's sum ({n_sums} convs)"] if n_sums else [])
    return "; ".join(parts) or "round to nearest"


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
           "round_keep_kernel_sums", "reround_weights", "float_stem_nodes", "float_weights",
           "ImageCalibrationReader", "QuantReport", "QuantizationError", "CALIB_METHODS"]
