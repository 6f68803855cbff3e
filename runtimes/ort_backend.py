"""ONNX Runtime sessions: dynamic batch and sequence length, CPU, or CUDA when its provider is present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lugha.errors import BundleError
from lugha.manifest import GraphSpec, TensorSpec
from lugha.vocabulary import PRECISIONS
from lugha.runtimes.backends import GraphSession, import_engine


def providers(ort) -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), always CPU as the fallback."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OrtSession(GraphSession):
    """One ONNX graph on ONNX Runtime: what a device opens, and what the exporter's gates run (one session
    builder, so a gate measures what a device runs). ``spec`` None: the graph's own I/O (names, dtypes,
    shapes), for graphs not yet in a bundle."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, spec: GraphSpec | None = None, threads: int | None = None):
        ort = import_engine("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise on a device
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1  # these graphs are sequential; a second pool only costs memory
        try:
            session = ort.InferenceSession(str(path), options, providers=providers(ort))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph classes
            where = spec.file if spec is not None else str(path)
            raise BundleError(f"{where}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
        super().__init__(spec if spec is not None else _own_spec(path, session))
        self.session = session
        self.providers = session.get_providers()
        have_in = [i.name for i in session.get_inputs()]
        have_out = [o.name for o in session.get_outputs()]
        # A graph may drop an input it does not use (an exporter pruning attention_mask); never one it lacks.
        unknown = sorted(set(have_in) - set(self.input_names))
        missing = sorted(set(self.output_names) - set(have_out))
        if unknown or missing:
            raise BundleError(f"{self.spec.file}: graph inputs {have_in} / outputs {have_out} do not match the "
                              f"manifest's {self.input_names} / {self.output_names}")
        self._feed_names = have_in

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {n: feeds[n] for n in self._feed_names})
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None


_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
           "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _own_spec(path: str | os.PathLike, session) -> GraphSpec:
    """A GraphSpec of the graph's own inputs and outputs; unnamed dynamic dims become ``dim<i>``."""
    def tensor(arg) -> TensorSpec:
        if arg.type not in _DTYPES:
            raise BundleError(f"{path}: {arg.name} has type {arg.type}, which no bundle graph uses")
        shape = tuple(d if isinstance(d, int) and d > 0 else d if isinstance(d, str) and d.isidentifier()
                      else f"dim{i}" for i, d in enumerate(arg.shape))
        return TensorSpec(arg.name, _DTYPES[arg.type], shape)

    name, _, precision = Path(path).stem.partition(".")  # bundle files are <role>.<precision>.onnx
    return GraphSpec(name, "onnx", precision if precision in PRECISIONS else "fp32", str(path),
                     tuple(map(tensor, session.get_inputs())), tuple(map(tensor, session.get_outputs())))


def load_graph(path: str | os.PathLike, spec: GraphSpec, threads: int | None = None, **_) -> OrtSession:
    return OrtSession(path, spec, threads)


__all__ = ["OrtSession", "load_graph", "providers"]
