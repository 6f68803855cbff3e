"""Run one exported graph on named numpy inputs: what the gates call.

Every runner is ``runner(inputs: dict[str, ndarray]) -> dict[str, ndarray]`` with the spec's tensor
names, whatever the backend (the PyTorch original is :func:`lugha.export.specs.reference_runner`):
onnxruntime, or a LiteRT interpreter driven by the runtime's own
:class:`lugha.runtimes.tflite_io.SignatureSet` (static batch 1, rows one by one, text on the shortest signature
that fits), so a gate measures what a device runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from lugha.manifest import GraphSpec
from lugha.runtimes.tflite_io import SignatureSet

from lugha.export.specs import ExportSpec

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def onnx_runner(path: str | Path, threads: int | None = None, spec: GraphSpec | None = None) -> Runner:
    """The runtime's own ONNX Runtime session (:class:`lugha.runtimes.ort_backend.OrtSession`) as a
    runner: inputs cast to ``spec``'s dtypes (None: the graph's own), outputs by name. Extra inputs in
    the dict are ignored, as a device's host code passes only what the graph takes."""
    from lugha.runtimes.ort_backend import OrtSession

    session = OrtSession(path, spec, threads)
    return lambda inputs: session.run({n: inputs[n] for n in session.input_names})


def tflite_interpreter(path: str | Path, threads: int | None = None):
    """A LiteRT interpreter from the runtimes' engine table (BackendNotInstalledError names the pip extra)."""
    from lugha.runtimes.backends import import_engine

    return import_engine("litert").Interpreter(model_path=str(path), num_threads=threads)


def tflite_signatures(path: str | Path, spec: ExportSpec, pad_ids: dict[str, int] | None = None,
                      threads: int | None = None) -> SignatureSet:
    """The runtime's own signature handling (:class:`lugha.runtimes.tflite_io.SignatureSet`) over one graph."""
    return SignatureSet(tflite_interpreter(path, threads), spec.input_names(), spec.output_names(), str(path),
                        spec.name, fill=pad_ids)


def tflite_runner(path: str | Path, spec: ExportSpec, pad_ids: dict[str, int] | None = None,
                  threads: int | None = None) -> Runner:
    """Rows one at a time, each on the shortest ``seq_<L>`` signature that holds its real tokens (images
    and heads have one ``serving_default``), int8 boundaries (de)quantized: what the LiteRT runtime does.
    ``pad_ids``: fill value per input when padding up to L (padding is masked, so any value works)."""
    sigs = tflite_signatures(path, spec, pad_ids, threads)
    return lambda inputs: {k: v.astype(np.float32, copy=False) for k, v in sigs.run(inputs).items()}


def io_quantization(path: str | Path, spec: ExportSpec) -> dict[str, dict]:
    """Inputs/outputs of a TFLite graph that are integer-quantized at the boundary (by the spec's names):
    name -> kind/dtype/scale/zero_point."""
    return tflite_signatures(path, spec).boundary_quantization()


def batched(runner: Runner, inputs: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
    n = len(next(iter(inputs.values())))
    parts = [runner({k: v[i:i + batch_size] for k, v in inputs.items()}) for i in range(0, n, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


__all__ = ["Runner", "onnx_runner", "tflite_runner", "tflite_interpreter", "tflite_signatures",
           "batched", "io_quantization"]
