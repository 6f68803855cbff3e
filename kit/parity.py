"""The one parity helper: are a runtime's outputs the golden outputs, within the graph's tolerance?

Shared by the export gates, the CLI, the tests and device_tests (like litert-torch's one
``compare_tflite_torch``), so "passes parity" means the same thing everywhere. Names, dtypes and shapes are
checked before values, each failure a typed error naming the graph and the output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from lugha.errors import LughaError
from lugha.manifest import TensorSpec, Tolerance

_INT_DTYPES = ("int8", "uint8")


class ParityError(LughaError):
    """Outputs differ from the reference; ``graph`` and ``output`` say where."""

    def __init__(self, graph: str, output: str, message: str):
        self.graph, self.output = graph, output
        where = f"{graph}:{output}" if output else graph
        super().__init__(f"{where}: {message}")


class OutputNameError(ParityError):
    """Output names differ from the spec/reference."""


class ShapeMismatchError(ParityError):
    """An output's shape differs from the spec or the reference."""


class DtypeMismatchError(ParityError):
    """An output's dtype differs from the spec or the reference."""


class ToleranceError(ParityError):
    """Values differ by more than the tolerance."""


@dataclass(frozen=True)
class ParityResult:
    output: str
    shape: tuple[int, ...]
    max_abs: float
    min_cosine: float
    max_steps: int | None  # for integer outputs: the largest difference in quantisation steps
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


def check_tensors(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], graph: str,
                  dims: dict[str, int] | None = None) -> dict[str, int]:
    """Names, dtypes and shapes of ``arrays`` against ``specs``; named dynamic dims must agree across
    tensors (one ``batch`` for all). Returns the resolved dynamic dims."""
    dims = dict(dims or {})
    expected, got = [s.name for s in specs], sorted(arrays)
    if sorted(expected) != got:
        raise OutputNameError(graph, "", f"tensor names {got} != spec {sorted(expected)}")
    for spec in specs:
        arr = np.asarray(arrays[spec.name])
        if arr.dtype != np.dtype(spec.dtype):
            raise DtypeMismatchError(graph, spec.name, f"dtype {arr.dtype} != spec {spec.dtype}")
        if arr.ndim != len(spec.shape):
            raise ShapeMismatchError(graph, spec.name, f"rank {arr.ndim} {arr.shape} != spec {list(spec.shape)}")
        for axis, (want, have) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, str):
                if dims.setdefault(want, have) != have:
                    raise ShapeMismatchError(graph, spec.name, f"axis {axis} ({want}) is {have}, "
                                             f"but {want}={dims[want]} elsewhere")
            elif want != have:
                raise ShapeMismatchError(graph, spec.name, f"shape {arr.shape} != spec {list(spec.shape)}")
    return dims


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim > 1 else a.reshape(1, -1).astype(np.float64)
    b = b.reshape(a.shape).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    den = na * nb
    cos = (a * b).sum(axis=1) / np.where(den == 0, 1.0, den)
    # Two zero rows agree (cosine 1); a zero row against a real one does not (cosine 0), so a runtime
    # that silently returns zeros can never pass on cosine.
    return np.where((na == 0) & (nb == 0), 1.0, np.where(den == 0, 0.0, cos))


def compare_outputs(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                    tolerance: Tolerance, graph: str = "graph") -> list[ParityResult]:
    """Compare every output; never raises on values (see :func:`assert_parity`), only on names/shapes/dtypes."""
    if sorted(reference) != sorted(actual):
        raise OutputNameError(graph, "", f"outputs {sorted(actual)} != reference {sorted(reference)}")
    results = []
    for name in sorted(reference):
        ref, out = np.asarray(reference[name]), np.asarray(actual[name])
        if ref.shape != out.shape:
            raise ShapeMismatchError(graph, name, f"shape {out.shape} != reference {ref.shape}")
        if ref.dtype != out.dtype:
            raise DtypeMismatchError(graph, name, f"dtype {out.dtype} != reference {ref.dtype}")
        diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        cos = float(_row_cosines(ref, out).min()) if ref.size else 1.0
        if ref.dtype.name in _INT_DTYPES:
            steps = int(max_abs)
            ok = steps <= tolerance.int8_steps
        else:
            steps = None
            ok = bool(np.isfinite(out).all()) and max_abs <= tolerance.max_abs and cos >= tolerance.min_cosine
        results.append(ParityResult(name, tuple(ref.shape), max_abs, cos, steps, ok))
    return results


def assert_parity(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                  tolerance: Tolerance, graph: str = "graph") -> list[ParityResult]:
    """:func:`compare_outputs`, raising :class:`ToleranceError` naming the first output out of tolerance."""
    results = compare_outputs(reference, actual, tolerance, graph)
    for r in results:
        if not r.ok:
            if r.max_steps is not None:
                detail = f"differs by {r.max_steps} quantisation steps (allowed {tolerance.int8_steps})"
            else:
                detail = (f"max abs diff {r.max_abs:.3g} (allowed {tolerance.max_abs:.3g}), min cosine "
                          f"{r.min_cosine:.6f} (required {tolerance.min_cosine})")
            raise ToleranceError(graph, r.output, detail)
    return results
