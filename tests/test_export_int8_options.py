"""`lugha export --int8-rounding/--int8-float-stem` reach the quantizer and land in the bundle's manifest."""
from __future__ import annotations

import json

import pytest

from lugha.cli import main


@pytest.mark.slow
def test_int8_recipe_options_reach_the_manifest(demo_small, tmp_path):
    pytest.importorskip("torch")
    from lugha.export.pipeline import ExportOptions, export_run
    from lugha.export.source import untrained_source

    out = tmp_path / "bundle"
    # allow_drop: an untrained tiny model on a few held-out emoji; its pooled gate cells cannot pass at that n
    export_run(untrained_source("test-tiny", demo_small, ("en", "sw")), out,
               ExportOptions(formats=("onnx",), precisions=("fp32", "int8"), allow_drop=True, calib_samples=8,
                             int8_rounding="nearest", int8_float_stem=0), say=lambda m: None)
    graphs = json.loads((out / "manifest.json").read_text())["graphs"]
    q = next(g for g in graphs if g["name"] == "image_encoder" and g["precision"] == "int8")["quantization"]
    assert q["rounding"] == "nearest" and q["float_stem"].startswith("none")


def test_export_cli_refuses_an_unknown_rounding(capsys):
    with pytest.raises(SystemExit):
        main(["export", "RUN", "--out", "B", "--int8-rounding", "stochastic"])
    assert "invalid choice" in capsys.readouterr().err
