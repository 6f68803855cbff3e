"""PT2E static int8 of image towers through litert-torch: the TFLite side of :mod:`lugha.export.image_int8`.

int8 weights per channel (symmetric), int8 asymmetric activations per tensor (min/max observers)
calibrated on real training images, BatchNorm folded by ``prepare_pt2e``, the graph in eval mode. Over
litert-torch's stock quantizer (mean cosine to fp32 on Lite0 0.786): a conv followed by ReLU/ReLU6 is
observed *after* the clamp (stock: the clamp shares the conv's observer, so the int8 grid spans the
pre-activation range: 0.980), the weights are GPTQ-rounded (0.997) and the stem stays float (0.9988) as
on the ONNX path (benchmarks/int8_image_tower.json). A float stem makes the graph's input float32; its output stays
int8 (the runtime dequantizes it with the tensor's own scale, :mod:`lugha.runtimes.tflite_io`). Activation ranges
are the calibration images' min/max, not litert-torch's histogram observer: that one picks the range with
the least L2 error *on the calibration images*, clipping what they did not show, and the worst held-out
image paid for it (min cosine 0.9925 -> 0.9974, mean unchanged at 0.9990; the ONNX path's percentile
99.9999 is near min/max too).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lugha.export.image_int8 import ROUNDINGS, HessianSum, conv_patches, float_stem_length, gptq_round, round_keep_kernel_sums
from lugha.export.specs import ExportSpec
from lugha.export.toolchain import TfliteExport, TfliteExportError, litert_torch, quiet, sample_kwargs

_CONVS = ("aten.conv2d.default", "aten.convolution.default")
_LINEAR = "aten.linear.default"
_ACTS = tuple(f"aten.{op}.default" for op in ("hardtanh", "hardtanh_", "relu", "relu_"))  # TFLite fuses these
_ADDS = ("aten.add.Tensor", "aten.add_.Tensor")


ACT_OBSERVERS = ("histogram", "minmax")


def _activation_config(config, observer: str):
    """``config`` with its activation observer swapped: ``histogram`` (litert-torch's: the range that
    minimises the calibration images' own L2 error, which clips what they did not show) or ``minmax``."""
    import dataclasses

    if observer == "histogram":
        return config
    if observer not in ACT_OBSERVERS:
        raise TfliteExportError(f"activation observer {observer!r}: expected one of {ACT_OBSERVERS}")
    from torchao.quantization.pt2e.observer import MinMaxObserver

    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def _clamp_aware_quantizer(enabled: bool = True, skip=frozenset(), observer: str = "minmax"):
    """litert-torch's PT2E quantizer (int8 per-channel symmetric weights, int8 asymmetric activations with
    ``observer``), except that a conv followed by ReLU or ReLU6 gets its observer after the clamp,
    which TFLite fuses into the conv. litert-torch's annotators fuse conv+relu only: a ReLU6 (``hardtanh``)
    shares the conv's observer, whose range is the pre-activation's (tens, both signs), not [0, 6].
    ``enabled=False``: the stock annotators (for measurements). Nodes named in ``skip`` stay float."""
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
            def keep(n) -> bool:
                return n.name not in self.skip and (filter_fn is None or filter_fn(n))

            if self.clamp_aware and config is not None and not config.is_qat:
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
                    if qu._is_annotated(part) or not all(keep(n) for n in part):
                        continue
                    conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
                    clamp.meta["quantization_annotation"] = QuantizationAnnotation(
                        output_qspec=qu.get_output_act_qspec(config), _annotated=True)
                    qu._mark_nodes_as_annotated(part)
                    self.fused += 1
            return super()._annotate_all_static_patterns(model, config, keep if self.skip else filter_fn)

    quantizer = ClampAwareQuantizer()
    quantizer.clamp_aware, quantizer.skip = enabled, frozenset(skip)
    return quantizer.set_global(_activation_config(pq.get_symmetric_quantization_config(is_per_channel=True), observer))


def _stem_nodes(gm, keep: str | int = "auto") -> set[str]:
    """The exported graph's nodes kept float (the rule: :func:`lugha.export.image_int8.float_stem_length`)."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    kinds = ["conv" if str(n.target) in _CONVS else
             "act" if str(n.target) in _ACTS and i and n.args[0] is nodes[i - 1] else
             "residual_add" if str(n.target) in _ADDS and sum(isinstance(a, type(n)) for a in n.args[:2]) == 2 else
             "other" for i, n in enumerate(nodes)]
    try:
        return {n.name for n in nodes[:float_stem_length(kinds, keep)]}
    except ValueError as e:
        raise TfliteExportError(str(e)) from None


def _geometry(node) -> dict:
    """stride/pads/dilation/groups of an aten conv node (ONNX pad order), for conv_patches."""
    a = list(node.args) + [None] * 9
    if str(node.target) == "aten.convolution.default":  # (x, w, b, stride, pad, dilation, transposed, _, groups)
        stride, pad, dil, groups = a[3], a[4], a[5], a[8]
    else:  # aten.conv2d: (x, w, b, stride, padding, dilation, groups)
        stride, pad, dil, groups = a[3], a[4], a[5], a[6]
    pad = list(pad) if isinstance(pad, (list, tuple)) else [pad or 0]
    ph, pw = pad * 2 if len(pad) == 1 else pad
    return {"stride": tuple(stride or (1, 1)), "pads": (ph, pw, ph, pw), "dilation": tuple(dil or (1, 1)),
            "groups": int(groups or 1)}


def _calibrate(prepared, calib_batches, name: str, hessians: dict | None) -> int:
    """Run the observed graph on every calibration image (batch 1, as traced); with ``hessians`` (node
    name -> HessianSum) also sum E[x x^T] of those convs' and linears' inputs."""
    import torch

    class Capture(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name in hessians:
                args, _ = self.fetch_args_kwargs_from_env(n)
                x = args[0].detach()
                if str(n.target) == _LINEAR:
                    hessians[n.name].add(conv_patches(x.reshape(-1, x.shape[-1])))
                else:
                    g = _geometry(n)
                    hessians[n.name].add(conv_patches(x, args[1].shape[2:], g["stride"], g["pads"], g["dilation"],
                                                      g["groups"]))
            return super().run_node(n)

    capture, n_images = Capture(prepared) if hessians else None, 0
    with torch.no_grad():
        for batch in calib_batches:
            for row in batch:
                x = torch.from_numpy(np.ascontiguousarray(row[None]))
                capture.run(x) if capture is not None else prepared(**{name: x})
                n_images += 1
    return n_images


def _quantized_weights(converted):
    """(layer node, weight tensor, scale tensor, qmin, qmax) of every conv/linear of a converted PT2E graph
    whose weight is quantized per output channel (symmetric)."""
    import functools

    def attr(n):
        return functools.reduce(getattr, n.target.split("."), converted)

    for node in converted.graph.nodes:
        if node.op != "call_function" or str(node.target) not in (*_CONVS, _LINEAR):
            continue
        dq = node.args[1]
        if getattr(dq, "op", "") != "call_function" or "dequantize_per_channel" not in str(dq.target):
            continue
        q = dq.args[0]
        if "quantize_per_channel" not in str(getattr(q, "target", "")):
            continue
        w_node, s_node, z_node, axis, qmin, qmax = q.args[:6]
        if not all(getattr(n, "op", "") == "get_attr" for n in (w_node, s_node, z_node)) or axis != 0:
            continue
        w, scale, zero = attr(w_node), attr(s_node), attr(z_node)
        if not bool(zero.any()):
            yield node, w, scale, int(qmin), int(qmax)


def _reround(converted, rounding: str, hessians: dict) -> str:
    """Re-round the int8 weights of a converted PT2E graph in place (the observer's scales kept): GPTQ where
    ``hessians`` has the layer's input statistics, else kernel sums. litert-torch lowers the new grid
    values to the same int8 numbers. Says what was done."""
    import torch

    if rounding == "nearest":
        return "round to nearest"
    n_gptq = n_sums = 0
    for node, w, scale, qmin, qmax in _quantized_weights(converted):
        wf, s = w.detach().double().numpy(), scale.detach().double().numpy()
        h = hessians.get(node.name)
        if rounding == "gptq" and h is not None and h.rows >= h.total.shape[-1]:
            groups = _geometry(node)["groups"] if str(node.target) in _CONVS else 1
            hm = h.mean()
            q, n_gptq = gptq_round(wf, s, hm if groups > 1 else hm[0], qmin=qmin, qmax=qmax), n_gptq + 1
        elif wf.ndim == 4 and wf.shape[2] * wf.shape[3] > 1:
            q, n_sums = round_keep_kernel_sums(wf, s, qmin, qmax), n_sums + 1
        else:
            continue
        w.data = torch.from_numpy((q * s.reshape(-1, *([1] * (wf.ndim - 1)))).astype(np.float32))
    parts = ([f"GPTQ rounding on the calibration images ({n_gptq} layers)"] if n_gptq else []) + (
        [f"k x k kernels re-rounded to keep each kernel's sum ({n_sums} convs)"] if n_sums else [])
    return "; ".join(parts) or "round to nearest"


def convert_image_int8_pt2e(spec: ExportSpec, model, sample: dict[str, np.ndarray], path: str | Path,
                            calib_batches: Sequence[np.ndarray], layout: str = "NCHW", clamp_aware: bool = True,
                            rounding: str = "gptq", float_stem: str | int = "auto",
                            observer: str = "minmax") -> TfliteExport:
    """PT2E static int8 through litert-torch (see the module docstring for the scheme). ``clamp_aware``
    off, ``rounding`` ``kernel_sum``/``nearest``, ``float_stem=0`` and ``observer="histogram"`` switch the
    fixes off, to measure what they do."""
    import torch

    if not any(len(b) for b in calib_batches):
        raise TfliteExportError(f"{spec.name}: static int8 needs calibration images; none were given")
    if rounding not in ROUNDINGS:
        raise TfliteExportError(f"rounding {rounding!r}: expected one of {ROUNDINGS}")
    lt = litert_torch()
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    module, start = spec.wrap(model, layout), time.monotonic()
    kw = sample_kwargs(spec, sample, None)
    name = spec.input_names()[0]
    try:
        with quiet():
            graph = torch.export.export(module.eval(), (), kw).module()  # eval: BatchNorm uses running stats
            quantizer = _clamp_aware_quantizer(clamp_aware, _stem_nodes(graph, float_stem), observer)
            prepared = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
            hessians = ({n.name: HessianSum() for n in prepared.graph.nodes if n.op == "call_function"
                         and str(n.target) in (*_CONVS, _LINEAR) and n.name not in quantizer.skip}
                        if rounding == "gptq" else {})
            n_images = _calibrate(prepared, calib_batches, name, hessians)
            converted = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
            done = _reround(converted, rounding, hessians)
            # Exported modules keep training=True whatever their ops (train()/eval() raise on them); the
            # ops are eval ops (above), and the flag is what litert-torch reads to warn "training mode".
            for m in converted.modules():
                m.training = False
            edge = lt.convert(converted, sample_kwargs=kw, quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(path))
    except Exception as e:  # noqa: BLE001
        raise TfliteExportError(f"{spec.name}: PT2E int8 conversion failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    stem = sum(1 for n in converted.graph.nodes if n.name in quantizer.skip and str(n.target) in _CONVS)
    return TfliteExport(spec.name, Path(path), "int8", time.monotonic() - start,
                        {"serving_default": list(kw[name].shape)},
                        {"scheme": f"int8 static PT2E (litert-torch{', clamp-aware observers' if clamp_aware else ''})",
                         "weights": f"int8 per channel, symmetric; {done}", "rounding": rounding,
                         "activations": f"int8 asymmetric per tensor ({observer} observer)" + (
                             f"; {quantizer.fused} conv+ReLU/ReLU6 pairs observed after the clamp" if clamp_aware
                             else ""),
                         "float_stem": f"{stem} leading convs kept float ({float_stem})" if stem
                         else f"none ({float_stem})",
                         "batchnorm": "folded into the convs (prepare_pt2e), graph in eval mode",
                         "calibration_images": n_images})


__all__ = ["convert_image_int8_pt2e"]
