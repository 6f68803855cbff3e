"""The shared vocabulary is spelled once: the manifest's schema, the exporter's options and specs, and the
runtimes all use lugha.vocabulary (torch-free)."""
from __future__ import annotations

import typing

import pytest

from lugha import manifest
from lugha.errors import ConfigError
from lugha.vocabulary import (FORMATS, GRAPH_ROLES, PRECISION_PREFERENCE, PRECISIONS, REFERENCE_METRIC, metric_key,
                              metrics_of)


def test_the_writer_and_the_readers_share_one_key():
    assert metric_key("onnx", "int8") == "onnx/int8" and REFERENCE_METRIC == "torch/fp32"
    spec = manifest.GraphSpec("text_encoder", "onnx", "int8", "g.onnx", (), ())
    assert spec.key == f"text_encoder/{metric_key('onnx', 'int8')}"
    metrics = {"onnx/int8": {"yo": {"i2t_r1": 0.4}}, "fp16": {"yo": {"i2t_r1": 0.3}}}
    assert metrics_of(metrics, "onnx", "int8") == ("onnx/int8", metrics["onnx/int8"])
    assert metrics_of(metrics, "onnx", "fp16") == ("fp16", metrics["fp16"])  # a hand-written bundle's bare key
    assert metrics_of(metrics, "tflite", "int8") is None


def test_every_list_is_the_vocabularys():
    from lugha.export.options import ExportOptions
    from lugha.export.specs import SPECS
    from lugha.runtimes.backends import PRECISION_ORDER
    from lugha.runtimes.bundle import ROLES

    hints = typing.get_type_hints(manifest.GraphSpec)
    assert typing.get_args(hints["precision"]) == PRECISIONS and typing.get_args(hints["format"]) == FORMATS
    assert tuple(SPECS) == GRAPH_ROLES == ROLES
    assert sorted(PRECISION_ORDER) == sorted(PRECISION_PREFERENCE) == sorted(PRECISIONS)
    with pytest.raises(ConfigError, match=r"\['fp32', 'fp16', 'int8'\]"):
        ExportOptions(precisions=("bf16",))
