"""Which engines can run a bundle's graphs on this machine, the session they all share, and the typed
errors for what cannot run here.

A backend runs one graph format: ``onnxruntime`` runs ``.onnx``; ``litert`` (``ai-edge-litert``) and
``tflite`` (the older ``tflite-runtime`` wheel, same Interpreter API) run ``.tflite``. Engines are imported
only when a backend is asked for, so ``import lugha.runtimes`` stays cheap on a Pi.

A reference model to compare against (PyTorch eager fp32, rebuilt from a training run) is no engine of
this floor: code above it hands one in as a :class:`Reference` (lugha.export.eager_reference), and the
runtimes open, time and check its sessions like any other.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from lugha.errors import BundleError, ConfigError, MissingDependencyError
from lugha.manifest import BundleManifest, GraphSpec
from lugha.vocabulary import PRECISION_PREFERENCE, REFERENCE_FORMAT


class BackendNotInstalledError(MissingDependencyError):
    """The engine of a backend is not importable here; the message names the pip command."""


class GraphNotInBundleError(BundleError):
    """The bundle has no graph of the requested format/precision; the message lists what it has."""


class GraphInputError(BundleError):
    """Inputs given to a graph do not match its spec (names, or a static shape the graph cannot take)."""


class UnsupportedGraphError(BundleError):
    """The backend is installed and the graph is in the bundle, but that engine is known to run it wrong."""


# (backend, precision, graph kind) -> why: refused up front rather than returning wrong numbers.
_KNOWN_BROKEN = {
    ("tflite", "int8", "text"): "tflite-runtime 2.14 lacks the dynamic-range int8 kernels of the text graph and "
                                "returns wrong (zero) embeddings: use ai-edge-litert (pip install lugha[litert]) "
                                "or the fp32/fp16 text graph",
}


def unsupported_reason(backend: str, spec: GraphSpec) -> str | None:
    """Why ``backend`` must not run ``spec`` (None when it may)."""
    kind = "text" if any(t.name == "input_ids" for t in spec.inputs) else "other"
    return _KNOWN_BROKEN.get((backend, spec.precision, kind))


@dataclass(frozen=True)
class BackendInfo:
    name: str
    format: str  # the GraphSpec.format it runs
    module: str  # what to import to use it
    install: str  # how to get it, shown in BackendNotInstalledError
    description: str


BACKENDS: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("onnxruntime", "onnx", "onnxruntime", "pip install onnxruntime (a base dependency of lugha)",
                "ONNX Runtime, CPU (CUDA when its provider is available)"),
    BackendInfo("litert", "tflite", "ai_edge_litert.interpreter", "pip install lugha[litert]",
                "LiteRT (ai-edge-litert) with XNNPACK"),
    BackendInfo("tflite", "tflite", "tflite_runtime.interpreter", "pip install lugha[tflite]",
                "tflite-runtime (older wheel, same Interpreter API), for boards without ai-edge-litert"),
)}
# "auto" tries these in order.
AUTO_ORDER = ("onnxruntime", "litert", "tflite")
PRECISION_ORDER = PRECISION_PREFERENCE  # what "auto" prefers: int8 is what edge devices are for


def backend_info(name: str) -> BackendInfo:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError("backend", f"unknown backend {name!r}; known: {', '.join(BACKENDS)}, auto") from None


@functools.lru_cache(maxsize=None)
def _probe(module: str) -> str | None:
    """None when ``module`` imports, else the reason (a broken install counts as not installed)."""
    try:
        importlib.import_module(module)
    except Exception as e:  # ImportError, or e.g. a wheel built against another numpy ABI
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return None


def is_installed(name: str) -> bool:
    return _probe(backend_info(name).module) is None


def installed_backends() -> list[str]:
    return [n for n in AUTO_ORDER if is_installed(n)]


def not_installed_reason(name: str) -> str:
    info = backend_info(name)
    why = _probe(info.module)
    return "" if why is None else f"backend {name!r} needs {info.module.split('.')[0]} ({why}): {info.install}"


def import_engine(name: str):
    """The engine module of a backend, or :class:`BackendNotInstalledError` naming the pip command."""
    info = backend_info(name)
    if _probe(info.module) is not None:
        raise BackendNotInstalledError(not_installed_reason(name))
    return importlib.import_module(info.module)


class GraphSession:
    """One loaded graph. :meth:`run` takes and returns numpy arrays keyed by the contract's tensor names;
    inputs are cast to the spec's dtypes, outputs come back in the spec's dtypes."""

    backend = ""

    def __init__(self, spec: GraphSpec):
        self.spec = spec
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if sorted(inputs) != sorted(self.input_names):
            raise GraphInputError(f"{self.spec.key}: inputs {sorted(inputs)} != graph inputs "
                                  f"{sorted(self.input_names)}")
        feeds = {t.name: np.ascontiguousarray(inputs[t.name], dtype=t.dtype) for t in self.spec.inputs}
        batch = {a.shape[0] for a in feeds.values() if a.ndim}
        if len(batch) > 1:
            raise GraphInputError(f"{self.spec.key}: inputs disagree on the batch size {sorted(batch)}")
        outputs = self._run(feeds)
        return {t.name: np.asarray(outputs[t.name], dtype=t.dtype) for t in self.spec.outputs}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine's memory (sessions also free it when garbage-collected)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.key})"


# The reference's name in sessions and benchmark reports (their ``vs_torch`` ratios are against it).
REFERENCE_BACKEND = REFERENCE_FORMAT


@dataclass(frozen=True)
class Reference:
    """A model to compare a bundle's graphs against, opened by code above this floor (PyTorch eager fp32:
    :func:`lugha.export.eager_reference.reference_for`). The runtimes call ``open`` and treat its sessions
    like any backend's, so they never import torch or the training code."""

    source: str  # what it is rebuilt from: a training run folder, or "config"
    open: Callable[[Path, BundleManifest, int | None], Mapping[str, GraphSession]]  # (root, manifest, threads)
    factory: str = ""  # "module:function" that rebuilds it from ``source`` in a benchmark's worker process
    golden_verdict: bool = True  # False: its outputs are not meant to match the golden ones (no parity verdict)
    missing: str = ""  # why it cannot open on this machine ("" when it can), naming the pip command


def load_reference(factory: str, source: str) -> Reference:
    """The :class:`Reference` that ``factory`` (``"module:function"``) makes of ``source``: how a worker
    process, which cannot be handed a callable, gets the reference its parent was given."""
    module, _, attr = factory.partition(":")
    if not module or not attr:
        raise ConfigError("reference_factory", f"expected 'module:function', got {factory!r}")
    return getattr(importlib.import_module(module), attr)(source)


__all__ = ["BackendNotInstalledError", "GraphNotInBundleError", "GraphInputError", "BackendInfo", "BACKENDS",
           "AUTO_ORDER", "PRECISION_ORDER", "backend_info", "is_installed", "installed_backends",
           "not_installed_reason", "import_engine", "GraphSession", "REFERENCE_BACKEND", "Reference",
           "load_reference"]
