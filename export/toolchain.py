"""What the exporters share: one quiet context for the converters' chatter, the litert-torch import with
its install hint, the batch-1 sample a static converter traces, and the TFLite result types.

Kept apart so tflite_export (float + dynamic int8) and tflite_int8 (PT2E static int8) import it and not
each other, and so the ONNX exporter and the TFLite converters silence their tools the same way.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lugha.errors import LughaError, MissingDependencyError
from lugha.runtimes.tflite_io import fit_length

from lugha.export.specs import ExportSpec


class TfliteExportError(LughaError):
    """litert-torch or ai-edge-quantizer failed on a graph."""


@dataclass
class TfliteExport:
    graph: str
    path: Path
    precision: str
    seconds: float
    signatures: dict[str, list[int]] = field(default_factory=dict)  # signature -> input shape
    quantization: dict = field(default_factory=dict)


@contextlib.contextmanager
def quiet():
    """The exporters print pages of progress, deprecation notes and TF logs; keep the user's terminal
    readable (warnings off, stdout swallowed, TF's C++ log at errors only, restored on exit)."""
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old


def litert_torch():
    try:
        import litert_torch
    except ImportError:
        raise MissingDependencyError("TFLite export needs litert-torch: pip install 'lugha[export]'") from None
    return litert_torch


def sample_kwargs(spec: ExportSpec, sample: dict[str, np.ndarray], length: int | None):
    """The first row of ``sample`` as torch tensors by input name, tokens padded/cut to ``length``."""
    import torch

    out = {}
    for name in spec.input_names():
        x = sample[name][:1]
        if length is not None:
            x = fit_length(x, length)  # the runtime's own padding (masked out)
        out[name] = torch.from_numpy(np.ascontiguousarray(x))
    return out


__all__ = ["quiet", "litert_torch", "sample_kwargs", "TfliteExport", "TfliteExportError"]
