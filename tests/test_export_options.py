"""ExportOptions is declared once: `lugha export`'s flags are its fields (torch-free, runs anywhere)."""
from __future__ import annotations

import os
from dataclasses import fields

import pytest

from lugha.cli import build_parser
from lugha.errors import ConfigError
from lugha.export.options import ExportOptions, cli_fields


def _export_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["export"]


def test_every_option_is_a_flag_with_the_fields_default():
    actions = {a.dest: a for a in _export_parser()._actions}
    flagged = {f.name for f in cli_fields()}
    assert flagged == {f.name for f in fields(ExportOptions)} - {"golden_rows"}  # the one internal knob
    for f in cli_fields():
        action = actions[f.name]
        assert action.option_strings == [f.metadata["flag"]] and action.default == f.default, f.name
        assert action.help == f.metadata["help"]


def test_parsed_flags_build_the_options(tmp_path):
    args = _export_parser().parse_args([
        "run", "--out", "b", "--formats", "onnx,tflite", "--precision", "fp16,int8", "--max-drop", "2.5",
        "--allow-drop", "--gate", "strict", "--gate-splits", "test", "--trim-vocab", "--calib-samples", "8",
        "--calib-texts", "9", "--text-int8", "dynamic", "--calib-method", "entropy", "--int8-policy", "as-is",
        "--int8-rounding", "nearest", "--int8-float-stem", "3", "--seq-lengths", "16,64", "--eval-split", "val",
        "--eval-limit", "5", "--zip", "--sign", "key.pem", "--overwrite", "--legacy-onnx"])
    opts = ExportOptions(**{f.name: getattr(args, f.name) for f in cli_fields()})
    assert opts == ExportOptions(
        formats=("onnx", "tflite"), precisions=("fp16", "int8"), max_drop=2.5, allow_drop=True, gate="strict",
        gate_splits=("test",), trim_vocab=True, calib_samples=8, calib_texts=9, text_int8="dynamic",
        calib_method="entropy", int8_policy="as-is", int8_rounding="nearest", int8_float_stem=3,
        seq_lengths=(16, 64), eval_split="val", eval_limit=5, zip=True, sign_key=os.path.abspath("key.pem"),
        overwrite=True, force_legacy_onnx=True)
    defaults = _export_parser().parse_args(["run", "--out", "b"])
    assert ExportOptions(**{f.name: getattr(defaults, f.name) for f in cli_fields()}) == ExportOptions()


def test_choices_are_the_checked_values():
    with pytest.raises(SystemExit):
        _export_parser().parse_args(["run", "--out", "b", "--text-int8", "per-row"])
    with pytest.raises(ConfigError, match="--precision"):
        ExportOptions(precisions=("int4",))
