"""LiteRT / tflite-runtime sessions over static-shape ``.tflite`` graphs.

Batch-1 graphs run row by row, text on the shortest ``seq`` signature that holds the row's real tokens,
int8 boundaries (de)quantized with each tensor's own parameters: all of that is
:class:`lugha.runtimes.tflite_io.SignatureSet`, which the exporter's parity gate runs too, so the gate measures
exactly what a device runs. ``ai-edge-litert`` and ``tflite-runtime`` share the Interpreter API; XNNPACK
is their default CPU delegate.
"""
from __future__ import annotations

import os

import numpy as np

from lugha.errors import BundleError
from lugha.manifest import GraphSpec
from lugha.runtimes.backends import GraphInputError, GraphSession, import_engine
from lugha.runtimes.tflite_io import SignatureSet, Variant
# Re-exported under their old private names (tests/test_runtimes_litert.py imports them from here).
from lugha.runtimes.tflite_io import dequantize as _dequantize, fit_length as _fit_length, match_names as _match  # noqa: F401
from lugha.runtimes.tflite_io import quantize as _quantize  # noqa: F401


class TfliteSession(GraphSession):
    def __init__(self, path: str | os.PathLike, spec: GraphSpec, threads: int | None = None,
                 backend: str = "litert"):
        super().__init__(spec)
        self.backend = backend
        engine = import_engine(backend)
        kwargs = {"num_threads": int(threads)} if threads else {}
        try:
            self.interpreter = engine.Interpreter(model_path=str(path), **kwargs)
        except Exception as e:
            raise BundleError(f"{spec.file}: {backend} cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.signatures = SignatureSet(self.interpreter, self.input_names, self.output_names, spec.file, spec.key,
                                       {t.name: t.dtype for t in spec.outputs}, input_error=GraphInputError)

    @property
    def variants(self) -> list[Variant]:
        return self.signatures.variants if self.signatures is not None else []

    @property
    def sequence_lengths(self) -> list[int]:
        return self.signatures.sequence_lengths

    def _pick(self, row: dict[str, np.ndarray]) -> Variant:
        return self.signatures.pick(row)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.signatures.run(feeds)

    def close(self) -> None:
        self.signatures, self.interpreter = None, None


def load_graph(path: str | os.PathLike, spec: GraphSpec, threads: int | None = None,
               backend: str = "litert", **_) -> TfliteSession:
    return TfliteSession(path, spec, threads, backend)


__all__ = ["TfliteSession", "load_graph"]
