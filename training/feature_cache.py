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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lugha.paths import lugha_home

from lugha.training.data import ImageStore, image_batches


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
                           channels_last: bool = False) -> Iterator[np.ndarray]:
    """Pooled image-tower features of each distinct image, in ``store.paths`` order."""
    import torch

    with eval_mode(model), torch.no_grad():
        for pixels in image_batches(store, batch_size, num_workers):
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
