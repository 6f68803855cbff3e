"""Which engines can run a bundle's graphs on this machine, the session they all share, and the typed
errors for what cannot run here.

A backend runs one graph format: ``onnxruntime`` runs ``.onnx``; ``litert`` (``ai-edge-litert``) and
``tflite`` (the older ``tflite-runtime`` wheel, same Interpreter API) run ``.tflite``; ``torch`` is the
PyTorch eager reference used by benchmarks (it needs a training run: the bundle holds no torch weights).
Engines are imported only when a backend is asked for, so ``import lugha.runtimes`` stays cheap on a Pi.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from lugha.errors import BundleError, ConfigError, MissingDependencyError
from lugha.manifest import GraphSpec


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
    format: str  # the GraphSpec.format it runs ("torch" runs none: it rebuilds the model from a run)
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
    BackendInfo("torch", "torch", "torch", "pip install lugha[train]",
                "PyTorch eager fp32 reference, rebuilt from a training run (benchmarks only)"),
)}
# "auto" tries these in order; torch is never picked implicitly.
AUTO_ORDER = ("onnxruntime", "litert", "tflite")
PRECISION_ORDER = ("int8", "fp32", "fp16")  # what "auto" prefers: int8 is what edge devices are for


def backend_info(name: str) -> BackendInfo:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError("backend", f"unknown backend {name!r}; known: {', '.join(BACKENDS)}, auto") from None


# Importing torch costs seconds and hundreds of MB: asking whether it is there must not pay that (a
# benchmark's parent process would pass its memory on to every worker it starts).
_FIND_ONLY = ("torch",)


@functools.lru_cache(maxsize=None)
def _probe(module: str) -> str | None:
    """None when ``module`` imports, else the reason (a broken install counts as not installed)."""
    top = module.split(".")[0]
    try:
        if top in _FIND_ONLY and top not in sys.modules:
            if importlib.util.find_spec(top) is None:
                raise ModuleNotFoundError(f"No module named {top!r}")
        else:
            importlib.import_module(module)
    except Exception as e:  # ImportError, or e.g. a wheel built against another numpy ABI
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return None


def is_installed(name: str) -> bool:
    return _probe(backend_info(name).module) is None


def installed_backends(include_torch: bool = False) -> list[str]:
    names = list(AUTO_ORDER) + (["torch"] if include_torch else [])
    return [n for n in names if is_installed(n)]


def not_installed_reason(name: str) -> str:
    info = backend_info(name)
    why = _probe(info.module)
    return "" if why is None else f"backend {name!r} needs {info.module.split('.')[0]} ({why}): {info.install}"


def import_engine(name: str):
    """The engine module of a backend, or :class:`BackendNotInstalledError` naming the pip command."""
    info = backend_info(name)
    if _probe(info.module) is not None:
        raise BackendNotInstalledError(not_installed_reason(name))
    try:
        return importlib.import_module(info.module)
    except Exception as e:  # found but broken (only modules in _FIND_ONLY get here unimported)
        raise BackendNotInstalledError(f"backend {name!r}: {info.module} is installed but does not import "
                                       f"({type(e).__name__}: {e}); reinstall: {info.install}") from None


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


__all__ = ["BackendNotInstalledError", "GraphNotInBundleError", "GraphInputError", "BackendInfo", "BACKENDS",
           "AUTO_ORDER", "PRECISION_ORDER", "backend_info", "is_installed", "installed_backends",
           "not_installed_reason", "import_engine", "GraphSession"]
