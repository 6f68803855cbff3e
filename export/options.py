"""``ExportOptions``: every knob of ``lugha export``, declared once.

Each field that a user sets carries its command-line flag and help in its metadata
(:func:`option`); ``lugha export`` builds its argparse flags from these fields and builds the options back
from the parsed flags (:func:`cli_fields`), so a new option cannot be forgotten on one side. Choices come
from the modules that check them (gates, text_int8, onnx_quant, advisor, image_int8).
"""
from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable

from lugha.errors import ConfigError
from lugha.vocabulary import FORMATS, PRECISIONS

from lugha.export.advisor import POLICIES
from lugha.export.gates import GATE_POLICIES
from lugha.export.image_int8 import ROUNDINGS
from lugha.export.onnx_quant import CALIB_METHODS
from lugha.export.text_int8 import TEXT_INT8_SCHEMES


def csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def int_csv(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in csv(text))


def float_stem(text: str) -> str | int:
    return text if text == "auto" else int(text)


def option(default: Any, flag: str, help: str, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] | None = None, metavar: str | None = None, path: bool = False) -> Any:
    """A dataclass field that is also a ``lugha export`` flag. ``path``: a file the user names (the CLI
    makes it absolute where it is typed); a bool field is a switch (``store_true``)."""
    meta = {"flag": flag, "help": help, "parse": parse, "choices": choices, "metavar": metavar, "path": path}
    return field(default=default, metadata=meta)


@dataclass
class ExportOptions:
    formats: tuple[str, ...] = option(("onnx",), "--formats", "onnx,tflite (default: onnx)", csv)
    precisions: tuple[str, ...] = option(("fp32", "int8"), "--precision",
                                         "any of fp32,fp16,int8 (default: fp32,int8)", csv)
    max_drop: float = option(1.0, "--max-drop", "the accuracy gate's margin: per-language drop vs fp32 in "
                             "points (default 1.0)", float)
    allow_drop: bool = option(False, "--allow-drop", "report the accuracy gate but block nothing (recorded in "
                              "the manifest and model card)")
    gate: str = option("default", "--gate", "default: block on a failed cell or a pooled cell that is not a "
                       "pass; strict: also on any undecided cell", choices=GATE_POLICIES)
    gate_splits: tuple[str, ...] = option(("val", "test"), "--gate-splits", "held-out splits whose items the "
                                          "accuracy gate pools (default val,test)", csv, metavar="SPLITS")
    trim_vocab: bool = option(False, "--trim-vocab", "keep only the token ids the training text uses (smaller "
                              "embedding table)")
    calib_samples: int = option(128, "--calib-samples", "training images for image int8 calibration "
                                "(default 128)", int, metavar="N")
    calib_texts: int = option(512, "--calib-texts", "training texts for per-token text int8 calibration "
                              "(default 512)", int, metavar="N")
    text_int8: str = option("per-token", "--text-int8", "text int8: per-token (SmoothQuant + per-token "
                            "activations + GPTQ weights; default), per-token-fine (ONNX: activations in two 8-bit "
                            "passes, near-fp32 accuracy, ~fp32 batch-1 speed, 4x smaller) or dynamic (stock "
                            "quantizers, no calibration: ONNX quantize_dynamic, one activation scale per tensor; "
                            "TFLite without smoothing)", choices=TEXT_INT8_SCHEMES)
    calib_method: str = option("percentile", "--calib-method", None, choices=CALIB_METHODS)
    int8_policy: str = option("keep-float", "--int8-policy", "what to do with layers the advisor flags "
                              "(default keep-float)", choices=POLICIES)
    int8_rounding: str = option("gptq", "--int8-rounding", "image int8 weight rounding: gptq (on the "
                                "calibration images; default), kernel_sum, nearest", choices=ROUNDINGS)
    int8_float_stem: str | int = option("auto", "--int8-float-stem", "image convs kept float: auto (up to the "
                                        "first residual add; default), N first convs, 0", float_stem,
                                        metavar="auto|N")
    seq_lengths: tuple[int, ...] = option((), "--seq-lengths", "TFLite text signatures, e.g. 16,64 (default: "
                                          "16 and the model's max_length)", int_csv)
    eval_split: str = option("test", "--eval-split", "split whose metrics the manifest and model card report "
                             "(falls back to val)")
    eval_limit: int = option(0, "--eval-limit", "at most N eval rows per language", int, metavar="N")
    golden_rows: int = 2  # not a flag: >= 2 so a dynamic batch axis is never traced as 1
    zip: bool = option(False, "--zip", "also write BUNDLE.zip")
    sign_key: str | None = option(None, "--sign", "ed25519 private key (PEM) to sign manifest.json with",
                                  metavar="KEY", path=True)
    overwrite: bool = option(False, "--overwrite", "replace an existing BUNDLE")
    force_legacy_onnx: bool = option(False, "--legacy-onnx", "use the TorchScript ONNX exporter, not dynamo")

    def __post_init__(self) -> None:
        for name, allowed in (("formats", FORMATS), ("precisions", PRECISIONS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad or not getattr(self, name):
                raise ConfigError(f"--{name[:-1] if name == 'formats' else 'precision'}",
                                  f"expected some of {list(allowed)}, got {list(getattr(self, name))}")
        if self.text_int8 not in TEXT_INT8_SCHEMES:
            raise ConfigError("--text-int8", f"expected one of {list(TEXT_INT8_SCHEMES)}, got {self.text_int8!r}")
        if self.gate not in GATE_POLICIES:
            raise ConfigError("--gate", f"expected one of {list(GATE_POLICIES)}, got {self.gate!r}")
        if not self.gate_splits:
            raise ConfigError("--gate-splits", "name at least one split (default val,test)")
        if self.max_drop < 0:
            raise ConfigError("--max-drop", f"must be >= 0 points, got {self.max_drop}")
        if self.golden_rows < 2:
            raise ConfigError("golden_rows", "need >= 2 rows (a dynamic batch axis must not be traced as 1)")


def cli_fields() -> list[Field]:
    """The fields of :class:`ExportOptions` that are ``lugha export`` flags, in declaration order."""
    return [f for f in fields(ExportOptions) if "flag" in f.metadata and f.default is not MISSING]


__all__ = ["ExportOptions", "option", "cli_fields", "csv", "int_csv", "float_stem"]
