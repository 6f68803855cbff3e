"""PyTorch -> ONNX for one graph spec: the dynamo exporter first, the TorchScript one if it fails.

Which exporter produced a file is recorded (``OnnxExport.exporter``) and reported, never hidden: the two
give different graphs (dynamo folds BatchNorm and names dynamic dims itself; TorchScript does neither).
Every file is checked with ``onnx.checker`` and its I/O names and dtypes against the spec before it
goes anywhere near a bundle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lugha.errors import LughaError
from lugha.manifest import TensorSpec

from lugha.export.specs import ExportSpec
from lugha.export.toolchain import quiet

DYNAMO_OPSET = 18
LEGACY_OPSET = 17
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


class OnnxExportError(LughaError):
    """Both exporters failed, or the file does not match its spec (names, dtypes, checker)."""


@dataclass
class OnnxExport:
    graph: str
    path: Path
    exporter: str  # "dynamo" or "legacy"
    seconds: float
    fallback_reason: str = ""

    def describe(self) -> str:
        why = f" (dynamo failed: {self.fallback_reason})" if self.fallback_reason else ""
        return f"{self.graph}: torch.onnx.export {self.exporter}{why}, {self.seconds:.1f}s"


def export_onnx(spec: ExportSpec, model, sample: dict[str, np.ndarray], path: str | Path,
                layout: str = "NCHW", force_legacy: bool = False) -> OnnxExport:
    """Export ``spec``'s graph of ``model`` to ``path`` (fp32). ``sample``: inputs by name, batch >= 2
    and sequence >= 2 so the exporter cannot specialise a dynamic axis to 1."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec.wrap(model, layout)
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in spec.input_names())
    start, reason = time.monotonic(), ""
    if not force_legacy:
        try:
            _export_dynamo(spec, module, args, path, spec.dynamic_axes(model, layout))
            check_onnx(path, spec.inputs(model, layout), spec.outputs(model))
            return OnnxExport(spec.name, path, "dynamo", time.monotonic() - start)
        except Exception as e:  # noqa: BLE001 - any dynamo failure falls back, with its reason kept
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            path.unlink(missing_ok=True)
    else:
        reason = "legacy exporter requested"
    start = time.monotonic()
    try:
        with quiet():
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(spec.input_names()),
                              output_names=list(spec.output_names()), dynamic_axes=spec.dynamic_axes(model, layout),
                              opset_version=LEGACY_OPSET, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001
        raise OnnxExportError(f"{spec.name}: both ONNX exporters failed (dynamo: {reason}; legacy: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    check_onnx(path, spec.inputs(model, layout), spec.outputs(model))
    return OnnxExport(spec.name, path, "legacy", time.monotonic() - start, reason)


def _export_dynamo(spec: ExportSpec, module, args, path: Path, axes_of: dict[str, dict[int, str]]) -> None:
    import torch
    from torch.export import Dim

    dims: dict[str, object] = {}
    dynamic = {}
    for name in spec.input_names():
        axes = axes_of.get(name, {})
        dynamic[name] = {i: dims.setdefault(d, Dim(d)) for i, d in axes.items()}
    with quiet():
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=list(spec.input_names()),
                          output_names=list(spec.output_names()), dynamic_shapes=dynamic,
                          opset_version=DYNAMO_OPSET, external_data=False, verbose=False)


def check_onnx(path: str | Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    """``onnx.checker`` plus the spec's input/output names and dtypes (values are checked by parity)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:  # noqa: BLE001 - onnx raises its own ValidationError family
        raise OnnxExportError(f"{path}: onnx checker: {str(e).splitlines()[0][:200]}") from None
    m = onnx.load(str(path), load_external_data=False)
    got_in = [(i.name, _ONNX_DTYPES.get(i.type.tensor_type.elem_type, "?")) for i in m.graph.input]
    got_out = [(o.name, _ONNX_DTYPES.get(o.type.tensor_type.elem_type, "?")) for o in m.graph.output]
    want_in, want_out = [(t.name, t.dtype) for t in inputs], [(t.name, t.dtype) for t in outputs]
    if got_in != want_in or got_out != want_out:
        raise OnnxExportError(f"{path}: graph I/O {got_in} -> {got_out} does not match the spec "
                              f"{want_in} -> {want_out}")


__all__ = ["export_onnx", "check_onnx", "OnnxExport", "OnnxExportError"]
