"""PyTorch -> TFLite (LiteRT) with litert-torch: static shapes, fp32 / fp16 / int8.

* Shapes are static, batch 1 (what NNAPI/GPU delegates and microcontrollers need). The text encoder gets
  one signature per sequence length, ``seq_<L>`` (weights are shared between signatures); the runtime
  pads a text up to the smallest L that fits. Images and heads have one ``serving_default`` signature.
* int8, image tower: PT2E static quantization calibrated on real training images, lowered by
  litert-torch: int8 weights per channel (symmetric), int8 asymmetric activations per tensor, BatchNorm
  folded by ``prepare_pt2e``, the graph in eval mode. Two fixes over litert-torch's stock quantizer, each
  measured on EfficientNet-Lite0 (benchmarks/int8_image_tower.json): a conv followed by ReLU/ReLU6 is
  observed *after* the clamp (stock: the clamp shares the conv's observer, so the int8 grid spans the
  pre-activation range; mean cosine to fp32 on 100 held-out images 0.85 -> 0.988), and k x k kernels are
  re-rounded to keep their sums, as the ONNX path does (-> 0.996).
* int8, text tower: ai-edge-quantizer dynamic int8 (``dynamic_wi8_afp32``: int8 channelwise weights,
  activations quantized per call) on the fp32 flatbuffer.
* fp16: ai-edge-quantizer float casting of the weights (fp16 storage, float compute), I/O float32.

LiteRT has no int64 inputs on most delegates: token ids and masks are int32 in these graphs, and the
bundle's TensorSpecs say so.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lugha.errors import LughaError, MissingDependencyError
from lugha.manifest import TensorSpec
from lugha.tflite_io import fit_length

from .specs import ExportSpec


class TfliteExportError(LughaError):
    """litert-torch or ai-edge-quantizer failed on a graph."""


@dataclass
class TfliteExport:
    graph: str
    path: Path
    precision: str
    seconds: float
    signatures: dict[str, list[int]] = field(default_factory=dict)  # signature -> input shape
    quantization: dict = field(default_factory=dict)


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree and TF logs; keep the user's terminal readable."""
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old


def _litert_torch():
    try:
        import litert_torch
    except ImportError:
        raise MissingDependencyError("TFLite export needs litert-torch: pip install 'lugha[export]'") from None
    return litert_torch


def static_inputs(spec: ExportSpec, model, layout: str, seq_length: int | None = None) -> tuple[TensorSpec, ...]:
    """The spec's inputs with batch 1 (and the sequence length), token inputs as int32."""
    dims = {"batch": 1, **({"seq": seq_length} if seq_length else {})}
    out = []
    for t in spec.inputs(model, layout, static=dims):
        out.append(TensorSpec(t.name, "int32" if t.dtype == "int64" else t.dtype, t.shape, t.layout))
    return tuple(out)


def _sample_kwargs(spec: ExportSpec, sample: dict[str, np.ndarray], length: int | None):
    import torch

    out = {}
    for name in spec.input_names():
        x = sample[name][:1]
        if length is not None:
            x = fit_length(x, length)  # the runtime's own padding (masked out)
        out[name] = torch.from_numpy(np.ascontiguousarray(x))
    return out


def convert_float(spec: ExportSpec, model, sample: dict[str, np.ndarray], path: str | Path, layout: str = "NCHW",
                  seq_lengths: Sequence[int] = ()) -> TfliteExport:
    """fp32 flatbuffer: one ``seq_<L>`` signature per length for token inputs, else ``serving_default``."""
    lt = _litert_torch()
    module, start = spec.wrap(model, layout), time.monotonic()
    tokens = any(n in ("input_ids", "attention_mask") for n in spec.input_names())
    try:
        with _quiet():
            if tokens:
                if not seq_lengths:
                    raise TfliteExportError(f"{spec.name}: token inputs need at least one sequence length")
                conv = None
                for length in sorted(set(seq_lengths)):
                    kw = _sample_kwargs(spec, sample, length)
                    conv = (lt.signature if conv is None else conv.signature)(f"seq_{length}", module, sample_kwargs=kw)
                edge = conv.convert()
                sigs = {f"seq_{n}": [1, n] for n in sorted(set(seq_lengths))}
            else:
                kw = _sample_kwargs(spec, sample, None)
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


def _clamp_aware_quantizer(enabled: bool = True):
    """litert-torch's PT2E quantizer (int8 per-channel symmetric weights, int8 asymmetric activations with
    a histogram observer), except that a conv followed by ReLU or ReLU6 gets its observer after the clamp,
    which TFLite fuses into the conv. litert-torch's annotators fuse conv+relu only: a ReLU6 (``hardtanh``)
    shares the conv's observer, whose range is the pre-activation's (tens, both signs), not [0, 6]."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq, pt2e_quantizer_utils as qu
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    convs = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
    relus = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
    relu6 = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}

    def fusable(node) -> bool:  # the activations a TFLite conv fuses: RELU, RELU6
        if node.op != "call_function" or not (node.target in relus or node.target in relu6):
            return False
        return node.target in relus or tuple(node.args[1:3]) == (0.0, 6.0)

    class ClampAwareQuantizer(pq.PT2EQuantizer):
        fused = 0

        def _annotate_all_static_patterns(self, model, config, filter_fn=None):
            if config is not None and not config.is_qat:
                for clamp in [n for n in model.graph.nodes if fusable(n)]:
                    conv = clamp.args[0]
                    if not isinstance(conv, Node) or conv.target not in convs or len(conv.users) != 1:
                        continue
                    part = [clamp, conv, conv.args[1]]
                    qmap = {conv.args[0]: qu.get_input_act_qspec(config), conv.args[1]: qu.get_weight_qspec(config)}
                    bias = conv.args[2] if len(conv.args) > 2 else None
                    if isinstance(bias, Node):
                        qmap[bias] = qu.get_bias_qspec(config)
                        part.append(bias)
                    if qu._is_annotated(part) or (filter_fn is not None and not all(filter_fn(n) for n in part)):
                        continue
                    conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
                    clamp.meta["quantization_annotation"] = QuantizationAnnotation(
                        output_qspec=qu.get_output_act_qspec(config), _annotated=True)
                    qu._mark_nodes_as_annotated(part)
                    self.fused += 1
            return super()._annotate_all_static_patterns(model, config, filter_fn)

    quantizer = ClampAwareQuantizer() if enabled else pq.PT2EQuantizer()  # stock: for measurements only
    return quantizer.set_global(pq.get_symmetric_quantization_config(is_per_channel=True))


def _reround_kernels(converted) -> int:
    """Re-round the per-channel int8 weights of every k x k conv of a converted PT2E graph so each kernel
    keeps its float sum (the scales stay the observer's); litert-torch lowers the new grid values to the
    same int8 numbers. Returns how many convs were rewritten."""
    import functools

    import torch

    from .onnx_quant import round_keep_kernel_sums

    done = 0
    for node in converted.graph.nodes:
        target = str(node.target)
        if node.op != "call_function" or "quantize_per_channel" not in target or "dequantize" in target:
            continue
        w_node, s_node, z_node, axis, qmin, qmax = node.args[:6]
        if not all(getattr(n, "op", "") == "get_attr" for n in (w_node, s_node, z_node)) or axis != 0:
            continue
        w, scale, zero = (functools.reduce(getattr, n.target.split("."), converted) for n in (w_node, s_node, z_node))
        if w.dim() != 4 or w.shape[2] * w.shape[3] == 1 or bool(zero.any()):
            continue
        s = scale.detach().double().numpy()
        q = round_keep_kernel_sums(w.detach().double().numpy(), s, int(qmin), int(qmax))
        w.data = torch.from_numpy((q * s.reshape(-1, 1, 1, 1)).astype(np.float32))
        done += 1
    return done


def convert_image_int8_pt2e(spec: ExportSpec, model, sample: dict[str, np.ndarray], path: str | Path,
                            calib_batches: Sequence[np.ndarray], layout: str = "NCHW", clamp_aware: bool = True,
                            keep_kernel_sums: bool = True) -> TfliteExport:
    """PT2E static int8 through litert-torch (see the module docstring for the scheme). ``clamp_aware``
    and ``keep_kernel_sums`` switch the two fixes off, to measure what they do."""
    import torch

    if not any(len(b) for b in calib_batches):
        raise TfliteExportError(f"{spec.name}: static int8 needs calibration images; none were given")
    lt = _litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    module, start = spec.wrap(model, layout), time.monotonic()
    kw = _sample_kwargs(spec, sample, None)
    name = spec.input_names()[0]
    n_images = 0
    try:
        with _quiet():
            quantizer = _clamp_aware_quantizer(clamp_aware)
            graph = torch.export.export(module.eval(), (), kw).module()  # eval: BatchNorm uses running stats
            prepared = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
            with torch.no_grad():
                for batch in calib_batches:  # the graph is traced at batch 1: calibrate row by row
                    for row in batch:
                        prepared(**{name: torch.from_numpy(np.ascontiguousarray(row[None]))})
                        n_images += 1
            converted = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
            rerounded = _reround_kernels(converted) if keep_kernel_sums else 0
            # Exported modules keep training=True whatever their ops (train()/eval() raise on them); the
            # ops are eval ops (above), and the flag is what litert-torch reads to warn "training mode".
            for m in converted.modules():
                m.training = False
            edge = lt.convert(converted, sample_kwargs=kw, quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(path))
    except Exception as e:  # noqa: BLE001
        raise TfliteExportError(f"{spec.name}: PT2E int8 conversion failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    return TfliteExport(spec.name, Path(path), "int8", time.monotonic() - start,
                        {"serving_default": list(kw[name].shape)},
                        {"scheme": "int8 static PT2E (litert-torch" + (", clamp-aware observers)" if clamp_aware else ")"),
                         "weights": "int8 per channel, symmetric" + (
                             f"; k x k kernels re-rounded to keep each kernel's sum ({rerounded} convs)" if rerounded
                             else "; round to nearest"),
                         "activations": "int8 asymmetric per tensor (histogram observer)" + (
                             f"; {quantizer.fused} conv+ReLU/ReLU6 pairs observed after the clamp" if clamp_aware
                             else ""),
                         "batchnorm": "folded into the convs (prepare_pt2e), graph in eval mode",
                         "calibration_images": n_images})


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
        with _quiet():
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
                  calib_batches: Sequence[np.ndarray] = ()) -> TfliteExport:
    """One TFLite graph of ``spec`` at ``precision`` (see the module docstring for what each means)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if precision == "int8" and spec.quant_scheme == "static":
        done = convert_image_int8_pt2e(spec, model, sample, path, calib_batches, layout)
        from .graph_runners import io_quantization

        io = io_quantization(path, spec)
        if io:  # a full-integer graph: the runtime (de)quantizes at the boundary with these parameters
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
    with tempfile.TemporaryDirectory(prefix="lugha-tflite-") as tmp:
        base = convert_float(spec, model, sample, Path(tmp) / "fp32.tflite", layout, seq_lengths)
        info = quantize_flatbuffer(base.path, path, precision)
    return TfliteExport(spec.name, path, precision, time.monotonic() - start, base.signatures, info)


__all__ = ["export_tflite", "convert_float", "convert_image_int8_pt2e", "quantize_flatbuffer", "static_inputs",
           "TfliteExport", "TfliteExportError"]
