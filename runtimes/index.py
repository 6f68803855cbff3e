"""A flat cosine-similarity index in numpy, float32 or int8 (4x smaller, for a Pi's memory and SD card).

int8 rows are quantised symmetrically with one scale per row (``q = round(v / s)``, ``s = max|v| / 127``)
and scored as ``s * (q @ query)`` with the query kept in float32, so the ranking error is one rounding
step per component. Vectors are L2-normalised on the way in: scores are cosine similarities.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from lugha.errors import ConfigError, DataError

PRECISIONS = ("float32", "int8")
_FORMAT = 1


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length, float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


def _quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(x).max(axis=1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(x / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class EmbeddingIndex:
    """``ids``: any 1-D array (ints, or strings such as file names); default 0..N-1."""

    def __init__(self, dim: int, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ConfigError("index.precision", f"expected one of {list(PRECISIONS)}, got {precision!r}")
        if dim <= 0:
            raise ConfigError("index.dim", f"must be positive, got {dim}")
        self.dim, self.precision = int(dim), precision
        self.vectors = np.zeros((0, dim), np.int8 if precision == "int8" else np.float32)
        self.scales = np.zeros((0,), np.float32)  # int8 only
        self.ids: np.ndarray = np.zeros((0,), np.int64)

    @classmethod
    def from_embeddings(cls, embeds: np.ndarray, ids=None, precision: str = "float32") -> "EmbeddingIndex":
        embeds = np.asarray(embeds)
        if embeds.ndim != 2:
            raise DataError(f"index: embeddings must be [N, D], got shape {embeds.shape}")
        index = cls(embeds.shape[1], precision)
        index.add(embeds, ids)
        return index

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.scales.nbytes)

    def add(self, embeds: np.ndarray, ids=None) -> None:
        embeds = np.asarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.dim:
            raise DataError(f"index: embeddings must be [N, {self.dim}], got shape {embeds.shape}")
        n = embeds.shape[0]
        if ids is None:
            if self.ids.dtype.kind not in "iu":
                raise DataError("index: this index has named ids; pass ids for the new rows")
            ids = np.arange(len(self), len(self) + n, dtype=np.int64)
        ids = np.asarray(ids)
        if ids.dtype == object:  # np.load refuses object arrays without pickle; strings are what ids are
            ids = ids.astype(str)
        if ids.shape != (n,):
            raise DataError(f"index: {ids.shape[0] if ids.ndim else 1} ids for {n} embeddings")
        unit = l2_normalize(embeds)
        if self.precision == "int8":
            q, s = _quantize_rows(unit)
            self.vectors, self.scales = np.concatenate([self.vectors, q]), np.concatenate([self.scales, s])
        else:
            self.vectors = np.concatenate([self.vectors, unit])
        self.ids = ids if len(self.ids) == 0 else np.concatenate([self.ids, ids])

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[Q, N] cosine similarities of the (normalised) queries to every entry."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise DataError(f"index: queries must be [Q, {self.dim}], got shape {queries.shape}")
        q = l2_normalize(queries)
        if self.precision == "int8":
            return (q @ self.vectors.T.astype(np.float32)) * self.scales[None, :]
        return q @ self.vectors.T

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k] float32, ids [Q, k]) best first; ``k`` is capped at the index size."""
        s = self.scores(queries)
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((s.shape[0], 0), np.float32), self.ids[np.zeros((s.shape[0], 0), np.int64)]
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(s, top, axis=1).astype(np.float32), self.ids[top]

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with open(path, "wb") as f:  # a file object: np.savez would otherwise append .npz to other names
            np.savez(f, format=np.int64(_FORMAT), precision=np.str_(self.precision), vectors=self.vectors,
                     scales=self.scales, ids=self.ids)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddingIndex":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a torn file: EOF, or no zip directory
            raise DataError(f"{path}: not an embedding index ({e})") from None
        missing = {"format", "precision", "vectors", "scales", "ids"} - set(data)
        if missing:
            raise DataError(f"{path}: not an embedding index (missing {sorted(missing)})")
        if int(data["format"]) != _FORMAT:
            raise DataError(f"{path}: index format {int(data['format'])}, this lugha reads {_FORMAT}")
        index = cls(data["vectors"].shape[1], str(data["precision"]))
        index.vectors, index.scales, index.ids = data["vectors"], data["scales"], data["ids"]
        if len(index.ids) != len(index.vectors):
            raise DataError(f"{path}: {len(index.ids)} ids for {len(index.vectors)} vectors")
        return index

    def __repr__(self) -> str:
        return f"EmbeddingIndex({len(self)} x {self.dim}, {self.precision}, {self.nbytes / 1e6:.2f} MB)"


__all__ = ["EmbeddingIndex", "l2_normalize", "PRECISIONS"]
