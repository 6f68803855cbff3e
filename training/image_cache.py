"""The image cache: every image decoded and resized once into one uint8 memmap, fed to the device in batches.

The FFCV / DALI idea with nothing but numpy. :class:`ImageStore` holds the resized ``[N, S, S, 3]`` uint8
pixels of a dataset's distinct images in one ``.npy`` file, made once per dataset and preprocessing spec.
Its key is a SHA-256 over every image's *bytes* and the spec's geometric fields (size, resize rule,
crop_pct, interpolation, fill), so an edited image or another size is another file, never a stale hit,
while a copied or re-timestamped dataset still hits. Reading every byte at each run start would cost
minutes on a large corpus, so the key is remembered against the files' stat fingerprint (path, size,
inode, mtime and ctime: no write, and no utime, leaves ctime as it was) and re-hashed when any changes. Normalisation (mean/std, layout) is not in the key:
it happens on the device, after the cache.

:class:`CachedBatches` is the loader that keeps a GPU fed: one background thread gathers each batch's
rows from the memmap with a single ``np.take`` straight into a pinned buffer (no per-image Python, no
worker processes, no shared-memory hop), the copy to the device is asynchronous, and random crops and
flips run there as batch ops (:func:`lugha.training.transforms.augment_on_device`). Without augmentation
its batches are byte for byte those of the worker path (:class:`lugha.training.data.PixelDataset`).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lugha.errors import DataError
from lugha.image_io import open_image
from lugha.paths import lugha_home
from lugha.preprocess import PreprocessSpec, resize_pil

from lugha.training.transforms import augment_on_device


def decode_resized(path: str, spec: PreprocessSpec) -> np.ndarray:
    """One image file -> HWC uint8 at the spec's size (the geometric half of preprocessing)."""
    try:
        with open_image(path) as im:  # regular files only, capped, allowlisted decoders (#17)
            im.load()
            return np.asarray(resize_pil(im, spec), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


def _file_digest(path: str) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    return h.digest()


def content_key(paths: Sequence[str], spec: PreprocessSpec, threads: int = 8) -> str:
    """The cache key: the geometric spec, then each image's SHA-256 in order. Files are hashed on
    ``threads`` threads (hashlib and file reads release the GIL), so the key costs a read of the data,
    a small fraction of decoding it."""
    h = hashlib.sha256(json.dumps([spec.size, spec.resize, spec.crop_pct, spec.interpolation,
                                   list(spec.fill)]).encode())
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for digest in pool.map(_file_digest, paths, chunksize=64):
            h.update(digest)
    return f"{h.hexdigest()[:20]}-{spec.size}"


def stat_fingerprint(paths: Sequence[str]) -> str:
    """A digest of every file's (path, size, inode, mtime, ctime): changes whenever any file's bytes may have."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"{p}: cannot read image ({e})") from None
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
    return h.hexdigest()


class _Decode:
    """Map-style dataset of resized images (the workers of :meth:`ImageStore.build`)."""

    def __init__(self, paths: Sequence[str], spec: PreprocessSpec):
        self.paths, self.spec = list(paths), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return decode_resized(self.paths[i], self.spec)


class ImageStore:
    """The resized uint8 images of a dataset (``paths`` in order), from the memmap cache or decoded on demand.

    ``spec``'s normalisation half is kept (as float32 NCHW, what the torch model eats) for
    :func:`lugha.training.data.to_model_input`; only its geometric half shapes the cached pixels."""

    def __init__(self, paths: Sequence[str], spec: PreprocessSpec, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True):
        import dataclasses

        self.paths, self.spec = list(paths), dataclasses.replace(spec, layout="NCHW", dtype="float32")
        self._key: str | None = None
        self.cache_path: Path | None = None
        self._folder = (Path(cache_dir) if cache_dir else lugha_home() / "cache") if use_cache else None
        if self._folder is not None:
            self.cache_path = self._folder / "images" / f"images-{self.key()}.npy"
        self._array: np.ndarray | None = None

    def key(self) -> str:
        """:func:`content_key` of the images and spec: once per store, and read back from
        ``<cache_dir>/images/keys/`` while the files' :func:`stat_fingerprint` is unchanged."""
        if self._key is not None:
            return self._key
        memo = None
        if self._folder is not None:
            fp = hashlib.sha256(f"{stat_fingerprint(self.paths)}\0{self.spec}".encode()).hexdigest()[:32]
            memo = self._folder / "images" / "keys" / f"{fp}.txt"
            if memo.is_file():
                self._key = memo.read_text(encoding="utf-8").strip()
                return self._key
        self._key = content_key(self.paths, self.spec)
        if memo is not None:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.stem}.{os.getpid()}.tmp")
            tmp.write_text(self._key + "\n", encoding="utf-8")
            os.replace(tmp, memo)
        return self._key

    def build(self, num_workers: int = 0, show_progress: bool = True, rank: int = 0,
              barrier: Callable[[], None] | None = None) -> None:
        """Fill the memmap once (decoding in ``num_workers`` processes); a no-op when it already exists.
        Written to a temp file then renamed, so a killed build never leaves a half-filled cache. In a
        distributed run every rank calls this with its node-local ``rank`` and a ``barrier``: local rank
        0 builds, the others wait for it (decoding the data once per node, not once per GPU)."""
        if rank == 0:
            self._build(num_workers, show_progress)
        if barrier is not None:
            barrier()

    def _build(self, num_workers: int, show_progress: bool) -> None:
        if self.cache_path is None or self.cache_path.exists():
            return
        import torch
        from tqdm.auto import tqdm

        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(f"{self.cache_path.stem}.{os.getpid()}.tmp.npy")
        s = self.spec.size
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(self.paths), s, s, 3))
        loader = torch.utils.data.DataLoader(_Decode(self.paths, self.spec), batch_size=32, num_workers=num_workers,
                                             collate_fn=np.stack, generator=torch.Generator())
        row = 0
        for block in tqdm(loader, desc=f"resizing {len(self.paths)} images", unit="batch",
                          disable=not show_progress):
            arr[row:row + len(block)] = block
            row += len(block)
        arr.flush()
        del arr
        os.replace(tmp, self.cache_path)

    def array(self) -> np.ndarray:
        """The whole cache as a read-only memmap (opened lazily, so each process maps the file itself)."""
        if self.cache_path is None or not self.cache_path.exists():
            raise DataError(f"image cache {self.cache_path or '(off: data.image_cache is false)'} is not built; "
                            "call ImageStore.build() first")
        if self._array is None:
            self._array = np.load(self.cache_path, mmap_mode="r")
        return self._array

    def get(self, i: int) -> np.ndarray:
        if self.cache_path is not None and self.cache_path.exists():
            return np.asarray(self.array()[i])
        return decode_resized(self.paths[i], self.spec)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


_END = object()


class CachedBatches:
    """Batches of ``(uint8 [B, S, S, 3] pixels on device, int64 row indices on CPU, *prepare(rows))`` from
    the image cache, in the order of ``batches`` (lists of row indices; a rank passes its own).

    ``image_index[row]`` is the row's image in ``store``. ``flip`` (``[rows]`` bools) and ``boxes``
    (``[rows, 4]``, :func:`~lugha.training.transforms.crop_boxes`) are this epoch's augmentation, applied
    on ``device``. ``prepare(rows)`` runs on the loader thread too (tokenising the captions, say) and its
    result tuple is appended to each batch. ``prefetch`` batches are gathered ahead. ``ring``: gather into
    ``prefetch + 1`` reused (on CUDA pinned) buffers, each handed back once its copy is done; default on for
    CUDA, where the copy is DMA; on a CPU device a fresh array per batch is the cheaper copy."""

    def __init__(self, store: ImageStore, image_index: np.ndarray, batches: Sequence[Sequence[int]], device=None,
                 flip: np.ndarray | None = None, boxes: np.ndarray | None = None, prefetch: int = 4,
                 prepare: Callable[[list[int]], tuple] | None = None, ring: bool | None = None):
        import torch

        self.array = store.array()
        self.image_index, self.batches = np.asarray(image_index, dtype=np.int64), [list(b) for b in batches]
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.flip, self.boxes, self.prefetch, self.prepare = flip, boxes, max(1, prefetch), prepare
        self.use_ring = self.device.type == "cuda" if ring is None else ring

    def __len__(self) -> int:
        return len(self.batches)

    def _ring(self):
        """Host buffers the gathers write into (pinned for CUDA), each reused once its copy is done."""
        import torch

        if not self.use_ring or not self.batches:
            return None
        shape = (max(len(b) for b in self.batches), *self.array.shape[1:])
        pin = self.device.type == "cuda"
        return [torch.empty(shape, dtype=torch.uint8, pin_memory=pin) for _ in range(self.prefetch + 1)]

    def _produce(self, out: queue.Queue, free: queue.Queue, ring, stop: threading.Event) -> None:
        import torch

        def put(q: queue.Queue, item) -> None:
            while not stop.is_set():
                try:
                    return q.put(item, timeout=0.1)
                except queue.Full:
                    continue

        try:
            for b in self.batches:
                images = self.image_index[np.asarray(b, dtype=np.int64)]
                extra = tuple(self.prepare(b)) if self.prepare is not None else ()
                if ring is None:
                    item = (torch.from_numpy(np.take(self.array, images, axis=0)), None, b, extra)
                else:
                    while True:  # a free buffer whose previous copy to the device has finished
                        if stop.is_set():
                            return
                        try:
                            slot, done = free.get(timeout=0.1)
                            break
                        except queue.Empty:
                            continue
                    if done is not None:
                        done.synchronize()
                    np.take(self.array, images, axis=0, out=ring[slot][:len(b)].numpy())
                    item = (ring[slot][:len(b)], slot, b, extra)
                put(out, item)
            put(out, _END)
        except BaseException as e:  # noqa: BLE001 - handed to the consuming thread, which raises it
            put(out, e)

    def __iter__(self):
        import torch

        ring = self._ring()
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        free: queue.Queue = queue.Queue()
        for slot in range(len(ring or ())):
            free.put((slot, None))
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(out, free, ring, stop), daemon=True,
                                  name="lugha-cached-batches")
        worker.start()
        try:
            while (item := out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                pixels, slot, rows, extra = item
                if slot is not None and self.device.type == "cuda":
                    pixels = pixels.to(self.device, non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
                    free.put((slot, done))
                elif slot is not None:  # a ring on a CPU device: the copy is synchronous
                    pixels = pixels.clone()
                    free.put((slot, None))
                else:
                    pixels = pixels.to(self.device)
                rows_t = torch.tensor(rows, dtype=torch.int64)
                pixels = augment_on_device(pixels, None if self.boxes is None else self.boxes[rows],
                                           None if self.flip is None else self.flip[rows])
                yield (pixels, rows_t, *extra)
        finally:
            stop.set()
            worker.join(timeout=5)
