"""Frozen-feature cache: a frozen tower's outputs are computed once per dataset and memory-mapped.

When nothing in the image tower trains (projection-only or text-only LoRA), its pooled features for
every training image never change: computing them each epoch is wasted work, and on a CPU it is nearly
all the work. They are computed once (eval transform, no augmentation, the frozen tower in eval mode -
exactly what the uncached path runs), stored as ``float32 [N, F]`` ``.npy`` and read back as a memmap,
so later epochs run at the speed of the projection heads. Text features are cached the same way when
the text tower is frozen.

The key covers everything the features depend on: the model config, a digest of the frozen weights
(random-init test towers differ per seed), the precision, and the inputs themselves - for images the
image store's key (paths, mtimes, sizes, resize spec), for texts the texts - so runs that select other
languages or splits of one dataset share the image features, and a changed anything is a new file,
never a stale hit.

At scale (:meth:`FeatureCache.get_or_build_sharded`) the table is cut into fixed shards of
``rows_per_shard`` rows, each its own ``.npy``, plus an ``index.json``: rank r of W encodes shards
r, r + W, ... of the rows and writes only those, so no rank ever holds the whole table, and the layout
depends on neither W nor who wrote what: a cache built by 2 ranks is the same bytes as one built by 1,
and a run with any other number of ranks reuses it (or finishes it, if a build was killed part-way).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lugha.errors import DataError
from lugha.paths import lugha_home

from lugha.training.data import ImageStore, image_batches

SHARD_ROWS = 65536  # a multiple of the text window (4096) and of power-of-two batch sizes: shard edges are batch edges
INDEX = "index.json"


def frozen_weights_digest(model) -> str:
    """SHA-256 over the names and bytes of every parameter and buffer that does not train."""
    import torch

    h = hashlib.sha256()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        if name in trainable:
            continue
        t = t.detach().cpu().contiguous()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        h.update(name.encode() + str(tuple(t.shape)).encode())
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Eval mode for the duration, then each module's own training flag back (not a blanket .train())."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


class FeatureCache:
    """Where cached features live: ``<cache_dir>/features/<kind>-<key>.npy`` (``LUGHA_HOME/cache`` by default)."""

    def __init__(self, frozen_digest: str, model_config_dict: dict, precision: str,
                 cache_dir: str | os.PathLike | None = None):
        """``frozen_digest``: :func:`frozen_weights_digest` of the model (the trainer hashes it once)."""
        self.folder = (Path(cache_dir) if cache_dir else lugha_home() / "cache") / "features"
        self._base = json.dumps([model_config_dict, precision, frozen_digest], sort_keys=True)

    def path(self, kind: str, inputs_key: str) -> Path:
        key = hashlib.sha256(f"{self._base}\0{kind}\0{inputs_key}".encode()).hexdigest()[:24]
        return self.folder / f"{kind}-{key}.npy"

    def shard_folder(self, kind: str, inputs_key: str, rows_per_shard: int = SHARD_ROWS) -> Path:
        """The sharded form's folder: the single-file name, with the shard size (part of the layout)."""
        return self.path(kind, inputs_key).with_suffix(f".shards-{rows_per_shard}")

    def get_or_build_sharded(self, kind: str, inputs_key: str, n: int,
                             compute_rows: Callable[[range], Iterator[np.ndarray]], *, rank: int = 0,
                             world_size: int = 1, barrier: Callable[[], None] | None = None,
                             rows_per_shard: int = SHARD_ROWS, desc: str = "",
                             show_progress: bool = True) -> "ShardedFeatures":
        """The sharded table of ``kind`` (``n`` rows), built by every rank together when missing.

        ``compute_rows(range)`` yields the row blocks of that range in order (e.g. ``lambda r:
        compute_image_features(..., rows=r)``). Every rank calls this; ``barrier`` (e.g.
        ``torch.distributed.barrier``; None for one process) lets the ranks wait for each other's shards
        before each writes the (identical) index and maps the table."""
        folder = self.shard_folder(kind, inputs_key, rows_per_shard)
        if not (folder / INDEX).exists():
            build_shards(folder, n, compute_rows, rank, world_size, rows_per_shard, desc, show_progress)
            if barrier is not None:
                barrier()
            finish_shards(folder, n, rows_per_shard)
        return ShardedFeatures(folder)

    def get_or_build(self, kind: str, inputs_key: str, n: int, compute: Callable[[], Iterator[np.ndarray]],
                     desc: str, show_progress: bool = True) -> np.ndarray:
        """The memmap of ``kind`` for the inputs named by ``inputs_key`` (``n`` rows), computing it once
        with ``compute`` (an iterator of row blocks in order). Written to a temp file and renamed: a
        killed run leaves none."""
        path = self.path(kind, inputs_key)
        if not path.exists():
            from tqdm.auto import tqdm

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            arr, row = None, 0
            with tqdm(total=n, desc=desc, unit="row", disable=not show_progress) as bar:
                for block in compute():
                    if arr is None:
                        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, block.shape[1]))
                    arr[row:row + len(block)] = block
                    row += len(block)
                    bar.update(len(block))
            if arr is None or row != n:
                raise RuntimeError(f"feature cache {kind}: computed {row} rows, expected {n}")
            arr.flush()
            del arr
            os.replace(tmp, path)
        return np.load(path, mmap_mode="r")


def image_inputs_key(store: ImageStore) -> str:
    return store.key()


def text_inputs_key(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def compute_image_features(model, store: ImageStore, batch_size: int, device, autocast, num_workers: int = 0,
                           channels_last: bool = False, rows: range | None = None) -> Iterator[np.ndarray]:
    """Pooled image-tower features of each distinct image (or of images ``rows``), in ``store.paths`` order."""
    import torch

    with eval_mode(model), torch.no_grad():
        for pixels in image_batches(store, batch_size, num_workers, rows):
            pixels = pixels.to(device)
            if channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            with autocast():
                feats = model.image_features(pixels)
            yield feats.float().cpu().numpy()


def compute_text_features(model, tokenizer, texts: list[str], batch_size: int, device, autocast,
                          window: int = 4096) -> Iterator[np.ndarray]:
    """Pooled text-tower features of each text, in order. Within each window of ``window`` texts the
    batches are formed by token length (then put back in order): padded to their longest member,
    batches of mixed lengths spend most of their compute on padding (the demo captions run 3-40 tokens)."""
    import torch

    with eval_mode(model), torch.no_grad():
        for start in range(0, len(texts), window):
            chunk = texts[start:start + window]
            ids, mask = tokenizer(chunk)
            lengths = mask.sum(dim=1)
            order = torch.argsort(lengths, stable=True)
            out = None
            for i in range(0, len(chunk), batch_size):
                rows = order[i:i + batch_size]
                width = max(int(lengths[rows].max()), 1)
                with autocast():
                    feats = model.text_features(ids[rows, :width].to(device), mask[rows, :width].to(device))
                feats = feats.float().cpu()
                if out is None:
                    out = torch.empty(len(chunk), feats.shape[1])
                out[rows] = feats
            yield out.numpy()


def shard_ranges(n: int, rows_per_shard: int = SHARD_ROWS) -> list[range]:
    """The shards' row ranges: fixed, whatever the number of ranks."""
    return [range(a, min(a + rows_per_shard, n)) for a in range(0, n, rows_per_shard)]


def _shard_file(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.npy"


def build_shards(folder: str | os.PathLike, n: int, compute_rows: Callable[[range], Iterator[np.ndarray]],
                 rank: int = 0, world_size: int = 1, rows_per_shard: int = SHARD_ROWS, desc: str = "",
                 show_progress: bool = True) -> list[Path]:
    """Compute and write rank ``rank``'s missing shards (``k % world_size == rank``), one at a time, each
    to a temp file then renamed; returns the files this call wrote. Shards already on disk (from a
    killed build, or another world size) are kept, never recomputed."""
    from tqdm.auto import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mine = [(k, r) for k, r in enumerate(shard_ranges(n, rows_per_shard))
            if k % world_size == rank and not _shard_file(folder, k).exists()]
    written = []
    with tqdm(total=sum(len(r) for _, r in mine), desc=desc or f"features (rank {rank})", unit="row",
              disable=not show_progress) as bar:
        for k, rows in mine:
            path = _shard_file(folder, k)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
            arr, row = None, 0
            for block in compute_rows(rows):
                if arr is None:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                    shape=(len(rows), block.shape[1]))
                arr[row:row + len(block)] = block
                row += len(block)
                bar.update(len(block))
            if arr is None or row != len(rows):
                raise DataError(f"{path}: computed {row} rows for rows {rows.start}-{rows.stop}, expected {len(rows)}")
            arr.flush()
            del arr
            os.replace(tmp, path)
            written.append(path)
    return written


def finish_shards(folder: str | os.PathLike, n: int, rows_per_shard: int = SHARD_ROWS) -> Path:
    """Check every shard is there with its rows and one width, then write ``index.json`` (temp + rename;
    every rank may call it: the bytes are the same). Reads the shards' headers only."""
    folder = Path(folder)
    shards, dims = [], set()
    for k, rows in enumerate(shard_ranges(n, rows_per_shard)):
        path = _shard_file(folder, k)
        if not path.exists():
            raise DataError(f"{path}: shard {k} (rows {rows.start}-{rows.stop}) is missing; did every rank build?")
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] != len(rows) or arr.dtype != np.float32:
            raise DataError(f"{path}: shape {arr.shape} {arr.dtype}, expected ({len(rows)}, F) float32")
        dims.add(arr.shape[1])
        shards.append({"file": path.name, "start": rows.start, "stop": rows.stop})
    if len(dims) > 1:
        raise DataError(f"{folder}: shards disagree on the feature width: {sorted(dims)}")
    index = {"format": "lugha-feature-shards/1", "rows": n, "dim": dims.pop() if dims else 0, "dtype": "float32",
             "rows_per_shard": rows_per_shard, "shards": shards}
    tmp = folder / f".{INDEX}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / INDEX)
    return folder / INDEX


class ShardedFeatures:
    """A sharded feature table read through memmaps: ``t[rows]`` gathers rows (int, slice or int array)
    from the shards that hold them; ``np.asarray(t)`` joins the whole table (the caller's choice)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        try:
            self.index = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{self.folder / INDEX}: cannot read the shard index ({e})") from None
        self.rows_per_shard = int(self.index["rows_per_shard"])
        self.shape = (int(self.index["rows"]), int(self.index["dim"]))
        self.dtype = np.dtype(self.index["dtype"])
        self.shards = [np.load(self.folder / s["file"], mmap_mode="r") for s in self.index["shards"]]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            r = int(rows) % self.shape[0] if rows < 0 else int(rows)
            return np.asarray(self.shards[r // self.rows_per_shard][r % self.rows_per_shard])
        idx = np.arange(self.shape[0])[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        shard, offset = np.divmod(idx, self.rows_per_shard)
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        for k in np.unique(shard):
            hit = shard == k
            out[hit] = self.shards[k][offset[hit]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.shards) if self.shards else np.empty(self.shape, self.dtype)
        return whole if dtype is None else whole.astype(dtype)
