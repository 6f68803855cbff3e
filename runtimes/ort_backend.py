"""ONNX Runtime sessions: dynamic batch and sequence length, CPU, or CUDA when its provider is present."""
from __future__ import annotations

import os

import numpy as np

from lugha.errors import BundleError
from lugha.manifest import GraphSpec
from lugha.runtimes.backends import GraphSession, import_engine


def providers(ort) -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), always CPU as the fallback."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OrtSession(GraphSession):
    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, spec: GraphSpec, threads: int | None = None):
        super().__init__(spec)
        ort = import_engine("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise on a device
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1  # these graphs are sequential; a second pool only costs memory
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers(ort))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph classes
            raise BundleError(f"{spec.file}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.providers = self.session.get_providers()
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        # A graph may drop an input it does not use (an exporter pruning attention_mask); never one it lacks.
        unknown = sorted(set(have_in) - set(self.input_names))
        missing = sorted(set(self.output_names) - set(have_out))
        if unknown or missing:
            raise BundleError(f"{spec.file}: graph inputs {have_in} / outputs {have_out} do not match the "
                              f"manifest's {self.input_names} / {self.output_names}")
        self._feed_names = have_in

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {n: feeds[n] for n in self._feed_names})
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None


def load_graph(path: str | os.PathLike, spec: GraphSpec, threads: int | None = None, **_) -> OrtSession:
    return OrtSession(path, spec, threads)


__all__ = ["OrtSession", "load_graph", "providers"]
