"""LiteRT / tflite-runtime sessions over static-shape ``.tflite`` graphs.

TFLite graphs are exported at batch 1 and, for text, at a few fixed sequence lengths (one signature per
length). A session therefore runs a batch row by row, and runs each row on the shortest signature that
holds all of its real tokens, cutting or adding padding (attention_mask 0) to fit: padded positions are
masked out of attention and pooling, so the embedding is the same. Converters name signature inputs
``args_0, args_1, ...`` unless told otherwise; those are matched to the contract's names by position.
``ai-edge-litert`` and ``tflite-runtime`` share the Interpreter API; XNNPACK is their default CPU delegate.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import BundleError
from ..manifest import GraphSpec
from .backends import GraphInputError, GraphSession, import_engine

_SEQ_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class _Variant:
    """One signature (or the bare graph): contract name -> tensor detail, for inputs and outputs."""

    key: str
    runner: object | None  # a SignatureRunner, or None for a graph without signatures
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    sig_names: dict[str, str]  # contract name -> signature (or tensor) name

    @property
    def seq_len(self) -> int | None:
        for name in _SEQ_INPUTS:
            if name in self.inputs:
                return int(self.inputs[name]["shape"][-1])
        return None


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _bare_name(name: str, prefix: str) -> str:
    """``serving_default_pixel_values:0`` -> ``pixel_values`` (names of a graph without signatures)."""
    name = name.split(":")[0]
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + "_") else name


def _match(want: list[str], have: dict[str, dict], what: str, file: str) -> dict[str, str]:
    """Contract names -> the graph's names: by name when they agree, else by position (``args_0``...)."""
    if set(want) <= set(have):
        return {n: n for n in want}
    if len(want) == len(have):
        return dict(zip(want, sorted(have, key=_natural)))
    raise BundleError(f"{file}: {what} {sorted(have)} cannot be matched to the manifest's {want}")


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Cast to the tensor's dtype; float into an int8/uint8 tensor uses its (scale, zero point)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(x: np.ndarray, detail: dict, want: str) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(want).kind == "f" and x.dtype.kind in "iu" and scale:
        return ((x.astype(np.float32) - zero) * scale).astype(want)
    return x.astype(want, copy=False)


class TfliteSession(GraphSession):
    def __init__(self, path: str | os.PathLike, spec: GraphSpec, threads: int | None = None,
                 backend: str = "litert"):
        super().__init__(spec)
        self.backend = backend
        engine = import_engine(backend)
        kwargs = {"num_threads": int(threads)} if threads else {}
        try:
            self.interpreter = engine.Interpreter(model_path=str(path), **kwargs)
        except Exception as e:
            raise BundleError(f"{spec.file}: {backend} cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.variants = self._variants()
        self.variants.sort(key=lambda v: v.seq_len or 0)

    def _variants(self) -> list[_Variant]:
        it, file = self.interpreter, self.spec.file
        signatures = it.get_signature_list()
        out = []
        for key in signatures:
            runner = it.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            in_map = _match(self.input_names, ins, "signature inputs", file)
            out_map = _match(self.output_names, outs, "signature outputs", file)
            out.append(_Variant(key, runner, {n: ins[s] for n, s in in_map.items()},
                                {n: outs[s] for n, s in out_map.items()}, {**in_map, **out_map}))
        if out:
            return out
        it.allocate_tensors()  # a graph without signatures: one variant over the raw tensors
        ins = {_bare_name(d["name"], "serving_default"): d for d in it.get_input_details()}
        outs = {_bare_name(d["name"], "StatefulPartitionedCall"): d for d in it.get_output_details()}
        in_map = _match(self.input_names, ins, "graph inputs", file)
        out_map = _match(self.output_names, outs, "graph outputs", file)
        return [_Variant("", None, {n: ins[s] for n, s in in_map.items()},
                         {n: outs[s] for n, s in out_map.items()}, {**in_map, **out_map})]

    @property
    def sequence_lengths(self) -> list[int]:
        return [v.seq_len for v in self.variants if v.seq_len is not None]

    def _pick(self, row: dict[str, np.ndarray]) -> _Variant:
        if len(self.variants) == 1 and self.variants[0].seq_len is None:
            return self.variants[0]
        needed = _tokens_needed(row)
        for v in self.variants:
            if v.seq_len is not None and v.seq_len >= needed:
                return v
        raise GraphInputError(f"{self.spec.key}: {needed} tokens do not fit the longest signature "
                              f"({max(self.sequence_lengths)}); lower the tokenizer's max_length")

    def _run_row(self, v: _Variant, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, detail in v.inputs.items():
            x = row[name]
            shape = tuple(int(d) for d in detail["shape"])
            if name in _SEQ_INPUTS:
                x = _fit_length(x, shape[-1])
            if x.shape != shape:
                raise GraphInputError(f"{self.spec.key}: input {name} has shape {x.shape}; this static graph "
                                      f"takes {shape}")
            feeds[name] = _quantize(x, detail)
        want = {t.name: t.dtype for t in self.spec.outputs}
        if v.runner is not None:
            raw = v.runner(**{v.sig_names[n]: a for n, a in feeds.items()})
            return {n: _dequantize(np.asarray(raw[v.sig_names[n]]), d, want[n]) for n, d in v.outputs.items()}
        it = self.interpreter
        for name, a in feeds.items():
            it.set_tensor(v.inputs[name]["index"], a)
        it.invoke()
        return {n: _dequantize(it.get_tensor(d["index"]).copy(), d, want[n]) for n, d in v.outputs.items()}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = next(iter(feeds.values())).shape[0]
        rows = []
        for i in range(n):  # batch-1 graphs: one row at a time
            row = {k: a[i:i + 1] for k, a in feeds.items()}
            rows.append(self._run_row(self._pick(row), row))
        if not rows:
            raise GraphInputError(f"{self.spec.key}: empty batch")
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    def close(self) -> None:
        self.variants, self.interpreter = [], None


def _tokens_needed(row: dict[str, np.ndarray]) -> int:
    """Positions up to the last real token (attention_mask 1); the full width without a mask."""
    mask = row.get("attention_mask")
    if mask is None:
        return int(row["input_ids"].shape[-1])
    real = np.flatnonzero(mask.reshape(-1))
    return int(real[-1]) + 1 if real.size else 1


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Cut trailing padding or pad with zeros (masked out) to ``length`` positions."""
    if x.shape[-1] >= length:
        return x[..., :length]
    pad = np.zeros(x.shape[:-1] + (length - x.shape[-1],), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def load_graph(path: str | os.PathLike, spec: GraphSpec, threads: int | None = None,
               backend: str = "litert", **_) -> TfliteSession:
    return TfliteSession(path, spec, threads, backend)


__all__ = ["TfliteSession", "load_graph"]
