"""The words the exporter writes and the runtimes read, spelled once: graph formats, precisions, graph
roles, and the key a candidate's metrics are filed under in the manifest.

Both sides import these (the manifest's schema types too), so a spelling cannot drift between the writer
and the reader: ``metric_key("onnx", "int8") == "onnx/int8"`` is what ``lugha export`` files the int8 ONNX
graphs' metrics under, and what the runtimes look up.
"""
from __future__ import annotations

from typing import Literal, Mapping, get_args

GraphFormat = Literal["onnx", "tflite"]
Precision = Literal["fp32", "fp16", "int8"]
GraphRole = Literal["image_encoder", "text_encoder", "fusion_head"]

FORMATS: tuple[str, ...] = get_args(GraphFormat)
PRECISIONS: tuple[str, ...] = get_args(Precision)  # the order --precision lists them in
GRAPH_ROLES: tuple[str, ...] = get_args(GraphRole)
# What "auto" picks first when a bundle has several: int8 is what edge devices are for.
PRECISION_PREFERENCE: tuple[str, ...] = ("int8", "fp32", "fp16")

# The candidate every exported graph is gated against: PyTorch eager fp32 (it has no file in a bundle).
REFERENCE_FORMAT = "torch"


def metric_key(format: str, precision: str) -> str:
    """The manifest's ``metrics`` key of a candidate: ``"onnx/int8"``, ``"tflite/fp16"``, ``"torch/fp32"``."""
    return f"{format}/{precision}"


REFERENCE_METRIC = metric_key(REFERENCE_FORMAT, "fp32")


def metrics_of(metrics: Mapping[str, dict], format: str, precision: str) -> tuple[str, dict] | None:
    """``(key, block)`` of a candidate in a manifest's ``metrics``: its :func:`metric_key`, else the bare
    precision a hand-written bundle may use (one reader, so the two spellings are tried in one place)."""
    for key in (metric_key(format, precision), precision):
        if key in metrics:
            return key, metrics[key]
    return None


__all__ = ["GraphFormat", "Precision", "GraphRole", "FORMATS", "PRECISIONS", "GRAPH_ROLES", "PRECISION_PREFERENCE",
           "REFERENCE_FORMAT", "REFERENCE_METRIC", "metric_key", "metrics_of"]
