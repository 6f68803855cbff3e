"""The I/O side of static-shape ``.tflite`` graphs, shared by the exporter's gates and the LiteRT runtime.

TFLite graphs are exported at batch 1 and, for text, at a few fixed sequence lengths (one signature per
length). A batch therefore runs row by row, each row on the shortest signature that holds all of its real
tokens, cutting or adding padding (attention_mask 0) to fit: padded positions are masked out of attention
and pooling, so the embedding is the same. Converters name signature inputs ``args_0, args_1, ...`` unless
told otherwise (and outputs ``output_0``); those are matched to the contract's names by position.
Full-integer graphs take and give int8 tensors: floats are quantized at the boundary with each tensor's
own (scale, zero point), the TFLite convention, so the logical I/O stays float32.

numpy only: the interpreter (``ai-edge-litert`` or ``tflite-runtime``, same API) is passed in, never
imported here. It lives with the runtimes (engine I/O) and the exporter imports it from here, so the
export gate runs a TFLite graph exactly as a device does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lugha.errors import BundleError
from lugha.runtimes.backends import GraphInputError

SEQ_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Cast to the tensor's dtype; float into an integer tensor with a scale uses its (scale, zero point)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def dequantize(x: np.ndarray, detail: dict, want: str = "float32") -> np.ndarray:
    """An output tensor as ``want``: integer tensors with a scale are dequantized with their own params."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(want).kind == "f" and x.dtype.kind in "iu" and scale:
        return ((x.astype(np.float32) - zero) * scale).astype(want)
    return x.astype(want, copy=False)


def boundary_quantization(details: Mapping[str, dict], kind: str) -> dict[str, dict]:
    """The integer-quantized tensors among ``details`` (name -> interpreter detail), for the manifest."""
    out = {}
    for name, d in details.items():
        scale, zero = d.get("quantization", (0.0, 0))
        if np.dtype(d["dtype"]).kind in "iu" and scale:
            out[name] = {"kind": kind, "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                         "zero_point": int(zero)}
    return out


def fit_length(x: np.ndarray, length: int, fill: int = 0) -> np.ndarray:
    """Cut trailing positions or pad with ``fill`` (masked out) to ``length`` positions on the last axis."""
    if x.shape[-1] >= length:
        return np.ascontiguousarray(x[..., :length])
    pad = np.full(x.shape[:-1] + (length - x.shape[-1],), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def tokens_needed(row: Mapping[str, np.ndarray]) -> int:
    """Positions up to the last real token (attention_mask 1); the full width without a mask."""
    mask = row.get("attention_mask")
    if mask is None:
        return int(row["input_ids"].shape[-1])
    real = np.flatnonzero(np.asarray(mask).reshape(-1))
    return int(real[-1]) + 1 if real.size else 1


def natural_key(name: str) -> list:
    """``args_2`` before ``args_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def bare_name(name: str, prefix: str) -> str:
    """``serving_default_pixel_values:0`` -> ``pixel_values`` (names of a graph without signatures)."""
    name = name.split(":")[0]
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + "_") else name


def match_names(want: Sequence[str], have: Mapping[str, dict], what: str, file: str) -> dict[str, str]:
    """Contract names -> the graph's names: by name when they agree, else by position (``args_0``...)."""
    if set(want) <= set(have):
        return {n: n for n in want}
    if len(want) == len(have):
        return dict(zip(want, sorted(have, key=natural_key)))
    raise BundleError(f"{file}: {what} {sorted(have)} cannot be matched to the manifest's {list(want)}")


@dataclass
class Variant:
    """One signature (or the bare graph): contract name -> tensor detail, for inputs and outputs."""

    key: str
    runner: object | None  # a SignatureRunner, or None for a graph without signatures
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    sig_names: dict[str, str]  # contract name -> signature (or tensor) name

    @property
    def seq_len(self) -> int | None:
        for name in SEQ_INPUTS:
            if name in self.inputs:
                return int(self.inputs[name]["shape"][-1])
        return None


class SignatureSet:
    """Every signature of one loaded interpreter, run by contract names.

    ``input_error``: the error class for inputs that cannot fit (the runtime passes its GraphInputError);
    ``fill``: padding value per sequence input (0 if absent; any value works, padding is masked).
    """

    def __init__(self, interpreter, input_names: Sequence[str], output_names: Sequence[str], file: str,
                 key: str = "", output_dtypes: Mapping[str, str] | None = None,
                 input_error: type[Exception] = GraphInputError, fill: Mapping[str, int] | None = None):
        self.interpreter, self.file, self.key = interpreter, file, key or file
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.output_dtypes = dict(output_dtypes or {})
        self.input_error, self.fill = input_error, dict(fill or {})
        self.variants = sorted(self._variants(), key=lambda v: v.seq_len or 0)

    def _variants(self) -> list[Variant]:
        it, file = self.interpreter, self.file
        out = []
        for key in it.get_signature_list():
            runner = it.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            in_map = match_names(self.input_names, ins, "signature inputs", file)
            out_map = match_names(self.output_names, outs, "signature outputs", file)
            out.append(Variant(key, runner, {n: ins[s] for n, s in in_map.items()},
                               {n: outs[s] for n, s in out_map.items()}, {**in_map, **out_map}))
        if out:
            return out
        it.allocate_tensors()  # a graph without signatures: one variant over the raw tensors
        ins = {bare_name(d["name"], "serving_default"): d for d in it.get_input_details()}
        outs = {bare_name(d["name"], "StatefulPartitionedCall"): d for d in it.get_output_details()}
        in_map = match_names(self.input_names, ins, "graph inputs", file)
        out_map = match_names(self.output_names, outs, "graph outputs", file)
        return [Variant("", None, {n: ins[s] for n, s in in_map.items()},
                        {n: outs[s] for n, s in out_map.items()}, {**in_map, **out_map})]

    @property
    def sequence_lengths(self) -> list[int]:
        return [v.seq_len for v in self.variants if v.seq_len is not None]

    def boundary_quantization(self) -> dict[str, dict]:
        """Integer-quantized inputs/outputs (contract names) with their scale and zero point."""
        out: dict[str, dict] = {}
        for v in self.variants:
            out.update(boundary_quantization(v.inputs, "input"))
            out.update(boundary_quantization(v.outputs, "output"))
        return out

    def pick(self, row: Mapping[str, np.ndarray]) -> Variant:
        """The only variant, or the shortest signature holding the row's real tokens."""
        if len(self.variants) == 1 and self.variants[0].seq_len is None:
            return self.variants[0]
        needed = tokens_needed(row)
        for v in self.variants:
            if v.seq_len is not None and v.seq_len >= needed:
                return v
        raise self.input_error(f"{self.key}: {needed} tokens do not fit the longest signature "
                               f"({max(self.sequence_lengths)}); lower the tokenizer's max_length")

    def run_row(self, v: Variant, row: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, detail in v.inputs.items():
            x = np.asarray(row[name])
            shape = tuple(int(d) for d in detail["shape"])
            if name in SEQ_INPUTS:
                x = fit_length(x, shape[-1], self.fill.get(name, 0))
            if x.shape != shape:
                raise self.input_error(f"{self.key}: input {name} has shape {x.shape}; this static graph "
                                       f"takes {shape}")
            feeds[name] = quantize(x, detail)
        want = {n: self.output_dtypes.get(n, "float32") for n in v.outputs}
        if v.runner is not None:
            raw = v.runner(**{v.sig_names[n]: a for n, a in feeds.items()})
            return {n: dequantize(np.asarray(raw[v.sig_names[n]]), d, want[n]) for n, d in v.outputs.items()}
        it = self.interpreter
        for name, a in feeds.items():
            it.set_tensor(v.inputs[name]["index"], a)
        it.invoke()
        return {n: dequantize(it.get_tensor(d["index"]).copy(), d, want[n]) for n, d in v.outputs.items()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch, row by row (batch-1 graphs), each row on the variant that fits it."""
        n = next(iter(feeds.values())).shape[0]
        if not n:
            raise self.input_error(f"{self.key}: empty batch")
        rows = []
        for i in range(n):
            row = {k: a[i:i + 1] for k, a in feeds.items()}
            rows.append(self.run_row(self.pick(row), row))
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


__all__ = ["SignatureSet", "Variant", "quantize", "dequantize", "boundary_quantization", "fit_length",
           "tokens_needed", "match_names", "natural_key", "bare_name", "SEQ_INPUTS"]
