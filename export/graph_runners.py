"""Run one exported graph (or its PyTorch original) on named numpy inputs: what the gates call.

Every runner is ``runner(inputs: dict[str, ndarray]) -> dict[str, ndarray]`` with the spec's tensor
names, whatever the backend: PyTorch, onnxruntime, or a LiteRT interpreter (static batch 1, so rows
run one by one; text is padded up to the smallest signature length that fits).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from lugha.errors import MissingDependencyError

from .specs import ExportSpec

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def torch_runner(spec: ExportSpec, model, layout: str = "NCHW") -> Runner:
    import torch

    module = spec.wrap(model, layout)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in spec.input_names()])
        return {spec.output_names()[0]: out.float().numpy()}

    return run


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    from .onnx_export import onnx_session, run_onnx

    session = onnx_session(path, threads)
    return lambda inputs: run_onnx(session, inputs)


def tflite_interpreter(path: str | Path, threads: int | None = None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependencyError("running TFLite graphs needs ai-edge-litert: pip install 'lugha[litert]'") from None
    return Interpreter(model_path=str(path), num_threads=threads)


def tflite_runner(path: str | Path, spec: ExportSpec, pad_ids: dict[str, int] | None = None,
                  threads: int | None = None) -> Runner:
    """Rows one at a time through the signature whose sequence length fits (``seq_<L>``; images and
    heads have one ``serving_default``). ``pad_ids``: fill value per input when padding up to L."""
    interp = tflite_interpreter(path, threads)
    sigs = interp.get_signature_list()
    by_len = sorted((int(k[4:]), k) for k in sigs if k.startswith("seq_"))
    runners = {k: interp.get_signature_runner(k) for k in sigs}
    # LiteRT has no int64 inputs on most delegates (token ids become int32), and full-integer graphs
    # take and give int8 tensors with their own scale and zero point: convert at the boundary.
    in_details = {k: r.get_input_details() for k, r in runners.items()}
    out_details = {k: r.get_output_details() for k, r in runners.items()}
    out_name = spec.output_names()[0]
    pad_ids = pad_ids or {}

    def one(row: dict[str, np.ndarray]) -> np.ndarray:
        key = next(iter(sigs))
        if by_len:
            n = next(iter(row.values())).shape[1]
            fit = [(length, k) for length, k in by_len if length >= n]
            length, key = fit[0] if fit else by_len[-1]
            row = {name: _fit_length(v, length, pad_ids.get(name, 0)) for name, v in row.items()}
        result = runners[key](**{n: to_tensor(v, in_details[key][n]) for n, v in row.items()})
        name = next(iter(result)) if len(result) == 1 else out_name
        return from_tensor(np.asarray(result[name]), out_details[key][name])

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(inputs.values())))
        rows = [one({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]
        return {out_name: np.concatenate(rows).astype(np.float32)}

    return run


def to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float/int64 array as the interpreter tensor wants it (int8 inputs quantized with its params)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype in (np.int8, np.uint8) and scale and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def from_tensor(y: np.ndarray, detail: dict) -> np.ndarray:
    """An interpreter output as float32 (int8 outputs dequantized with the tensor's own params)."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if y.dtype in (np.int8, np.uint8) and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32, copy=False)


def io_quantization(path: str | Path) -> dict[str, dict]:
    """Tensors of a TFLite graph that are integer-quantized at the boundary: name -> dtype/scale/zero."""
    interp = tflite_interpreter(path)
    out = {}
    for key in interp.get_signature_list():
        r = interp.get_signature_runner(key)
        for kind, details in (("input", r.get_input_details()), ("output", r.get_output_details())):
            for name, d in details.items():
                scale, zero = d.get("quantization", (0.0, 0))
                if np.dtype(d["dtype"]) in (np.int8, np.uint8) and scale:
                    out[name] = {"kind": kind, "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                                 "zero_point": int(zero)}
    return out


def _fit_length(x: np.ndarray, length: int, fill: int) -> np.ndarray:
    """Pad or cut the sequence axis to ``length`` (masked pooling makes extra padding harmless; texts
    longer than the largest signature are cut, as the tokenizer's max_length would)."""
    if x.shape[1] >= length:
        return np.ascontiguousarray(x[:, :length])
    pad = np.full((x.shape[0], length - x.shape[1]), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=1)


def batched(runner: Runner, inputs: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
    n = len(next(iter(inputs.values())))
    parts = [runner({k: v[i:i + batch_size] for k, v in inputs.items()}) for i in range(0, n, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


__all__ = ["Runner", "torch_runner", "onnx_runner", "tflite_runner", "tflite_interpreter", "batched", "to_tensor",
           "from_tensor", "io_quantization"]
