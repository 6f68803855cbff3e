"""Training data: manifest rows -> seeded batches of (pixels, row index).

Four pieces, each usable alone:

* :class:`PairSet` - the rows of one split (optionally some languages), with each distinct image file
  numbered once (the demo data captions one emoji image in ten languages; decode it once, not ten times).
* :func:`epoch_batches` - the order of one epoch as a pure function of (seed, epoch): shuffled, optionally
  language-balanced, with no image twice in a batch (two captions of one image are not negatives). A run
  resumed at batch k of epoch e replays exactly the batches an uninterrupted run would have seen.
* :class:`~lugha.training.image_cache.ImageStore` - every image resized once into a uint8 ``[N, S, S, 3]``
  ``.npy`` memmap, keyed by the images' bytes + the resize spec, so later epochs (and runs) skip decoding.
* :func:`batch_source` - one epoch's ``(pixels, rows)`` batches, from DataLoader workers (``loader="workers"``,
  the default) or straight from the image cache to the device with crops and flips there (``"cache"``).
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np

from lugha.records import Record, read_manifest
from lugha.errors import ConfigError, DataError
from lugha.preprocess import PreprocessSpec, normalize

from lugha.training.image_cache import CachedBatches, ImageStore  # ImageStore: long imported from here
from lugha.training.transforms import crop_boxes


class PairSet:
    """Rows of ``split`` (all rows when ``split`` is empty) whose language is in ``languages`` (empty = all)."""

    def __init__(self, manifest: str | os.PathLike, split: str = "", languages: Sequence[str] = ()):
        self.manifest = Path(manifest)
        if not self.manifest.is_file():
            raise DataError(f"{manifest}: manifest not found")
        self.root = self.manifest.parent
        rows = read_manifest(self.manifest)
        langs = set(languages)
        self.records: list[Record] = [r for r in rows if (not split or r.split == split)
                                      and (not langs or r.lang in langs)]
        if not self.records:
            have = sorted({r.split for r in rows}), sorted({r.lang for r in rows})
            raise DataError(f"{manifest}: no rows with split={split!r} and languages={sorted(langs) or 'all'} "
                            f"(splits present: {have[0]}, languages: {have[1]})")
        self.split, self.languages = split, tuple(sorted({r.lang for r in self.records}))
        paths: dict[str, int] = {}
        self.image_index = np.array([paths.setdefault(str(r.image_path(self.root)), len(paths))
                                     for r in self.records], dtype=np.int64)
        self.image_paths = list(paths)
        self.langs = np.array([r.lang for r in self.records])
        self.groups = [r.group_key for r in self.records]
        self.texts = [r.text for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


def epoch_order(langs: np.ndarray, seed: int, epoch: int, balance_languages: bool,
                language_weights: dict[str, float] | None = None) -> np.ndarray:
    """Row indices of one epoch. Balanced: every language gets the same share of the epoch's slots
    (small languages repeat within the epoch, large ones are subsampled), instead of its row share.
    ``language_weights`` multiply those shares (row shares, or equal shares when balanced)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(langs)
    weights = {k: float(v) for k, v in (language_weights or {}).items() if float(v) != 1.0}
    if not balance_languages and not weights:
        return rng.permutation(n)
    names = sorted(set(langs.tolist()))
    pools = {lang: np.flatnonzero(langs == lang) for lang in names}
    if weights:
        base = np.array([1.0 if balance_languages else len(pools[lang]) for lang in names])
        share = base * np.array([weights.get(lang, 1.0) for lang in names])
        exact = share / share.sum() * n
        count = np.floor(exact).astype(np.int64)
        count[np.argsort(count - exact)[: n - count.sum()]] += 1  # largest remainders get the leftover slots
        slots = rng.permutation(np.repeat(np.arange(len(names)), count))
    else:
        slots = rng.permutation(np.resize(np.arange(len(names)), n))
    cursors = {lang: [rng.permutation(pools[lang]), 0] for lang in names}
    out = np.empty(n, dtype=np.int64)
    for k, li in enumerate(slots):
        cur = cursors[names[li]]
        if cur[1] == len(cur[0]):  # this language's rows are used up: start a fresh shuffle of them
            cur[0], cur[1] = rng.permutation(pools[names[li]]), 0
        out[k] = cur[0][cur[1]]
        cur[1] += 1
    return out


def epoch_batches(langs: np.ndarray, groups: Sequence[str], batch_size: int, seed: int, epoch: int,
                  balance_languages: bool = False, unique_groups: bool = True,
                  language_weights: dict[str, float] | None = None) -> list[list[int]]:
    """The batches of one epoch, a pure function of its arguments.

    With ``unique_groups`` a row whose group is already in the batch waits for the next batch. A tail
    batch under half ``batch_size`` is dropped (its loss would see too few negatives); the order changes
    every epoch, so no row is always the one left out.
    """
    order = epoch_order(np.asarray(langs), seed, epoch, balance_languages, language_weights).tolist()
    if not unique_groups:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        batches, stream, pending = [], deque(order), deque()
        while stream or pending:
            batch, seen, deferred = [], set(), deque()
            for source in (pending, stream):
                while source and len(batch) < batch_size:
                    i = source.popleft()
                    if groups[i] in seen:
                        deferred.append(i)
                    else:
                        seen.add(groups[i])
                        batch.append(i)
            pending = deferred + pending
            batches.append(batch)
    keep = min(batch_size, max(2, (batch_size + 1) // 2), len(order))
    return [b for b in batches if len(b) >= keep]


def hflip_mask(seed: int, epoch: int, n: int) -> np.ndarray:
    """Which rows are flipped this epoch: seeded, so workers, resumes and reruns agree."""
    return np.random.default_rng([seed, epoch, 1]).random(n) < 0.5


class PixelDataset:
    """torch map-style dataset: row index -> (resized HWC uint8 pixels, row index).

    Workers ship uint8, a quarter of float32's bytes; :func:`to_model_input` normalises on the training
    device. At GPU rates (thousands of images/s) float32 batches through worker shared memory and the
    pinned copy are what caps the loader, not decoding (timm's PrefetchLoader does the same)."""

    def __init__(self, pairs: PairSet, store: ImageStore, flip: np.ndarray | None = None):
        self.pairs, self.store, self.flip = pairs, store, flip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        import torch

        hwc = self.store.get(int(self.pairs.image_index[i]))
        if self.flip is not None and self.flip[i]:
            hwc = hwc[:, ::-1]
        return torch.from_numpy(np.array(hwc)), i  # a copy: memmap rows are read-only


LOADERS = ("workers", "cache")
AUGMENTS = ("none", "hflip", "crop", "crop_hflip")


def batch_source(pairs: PairSet, store: ImageStore, batches: Sequence[Sequence[int]], *, seed: int, epoch: int,
                 augment: str = "none", loader: str = "workers", num_workers: int = 0, device=None,
                 prepare=None):
    """One epoch's ``(uint8 [B, S, S, 3] pixels, int64 rows)`` batches, in the order of ``batches``.

    ``loader="workers"``: :class:`PixelDataset` in ``num_workers`` DataLoader processes, pinned when
    ``device`` is CUDA (the trainer's path before the cache loader; same seeds, same bytes).
    ``loader="cache"``: :class:`~lugha.training.image_cache.CachedBatches`, gathered from the built image
    cache on a thread, already on ``device``, with ``augment``'s crops/flips applied there (``prepare``:
    see there). Flips are :func:`hflip_mask`'s and crops :func:`~lugha.training.transforms.crop_boxes`',
    both seeded by (seed, epoch): every rank and every resume draws the same ones."""
    if augment not in AUGMENTS or loader not in LOADERS:
        bad = ("data.augment", augment, AUGMENTS) if augment not in AUGMENTS else ("data.loader", loader, LOADERS)
        raise ConfigError(bad[0], f"{bad[1]!r} is not one of {list(bad[2])}")
    flip = hflip_mask(seed, epoch, len(pairs)) if augment in ("hflip", "crop_hflip") else None
    if loader == "workers":
        if augment.startswith("crop"):
            raise ConfigError("data.augment", f"{augment} crops on the training device: it needs data.loader: cache")
        if prepare is not None:
            raise ValueError("prepare runs on the cache loader's thread; loader='workers' has none")
        pin = device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda"
        return make_loader(PixelDataset(pairs, store, flip), batches, num_workers, seed=seed * 1_000_003 + epoch,
                           pin_memory=pin)
    boxes = crop_boxes(seed, epoch, len(pairs)) if augment.startswith("crop") else None
    return CachedBatches(store, pairs.image_index, batches, device, flip=flip, boxes=boxes, prepare=prepare)


def to_model_input(batch, spec: PreprocessSpec, device=None, channels_last: bool = False):
    """[B, H, W, 3] uint8 -> the model's input on ``device``: the same float32 arithmetic, in the same
    order, as :func:`lugha.preprocess.normalize` (so CPU results are bit-identical to the kit's)."""
    import torch

    x = batch.to(device, non_blocking=True) if device is not None else batch
    if spec.dtype != "uint8":
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(spec.std, dtype=torch.float32, device=x.device)
        x = (x.to(torch.float32) / 255.0 - mean) / std
    if spec.layout == "NCHW":
        x = x.permute(0, 3, 1, 2)  # a channels_last view already: NHWC memory is what channels_last wants
        return x if channels_last else x.contiguous()
    return x.contiguous()


def collate(items):
    import torch

    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items], dtype=torch.int64)


def make_loader(dataset: PixelDataset, batches: Sequence[Sequence[int]], num_workers: int, seed: int,
                pin_memory: bool = False):
    """A DataLoader over precomputed batches. Its own generator keeps the global torch RNG untouched
    (DataLoader draws a worker base seed on every iterator), so dropout streams match across resumes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    extra = {"persistent_workers": False, "prefetch_factor": 4} if num_workers else {}
    return torch.utils.data.DataLoader(dataset, batch_sampler=[list(b) for b in batches], collate_fn=collate,
                                       num_workers=num_workers, generator=g, pin_memory=pin_memory, **extra)


def pad_to_bucket(ids, mask, pad_id: int, buckets: Sequence[int] = (32, 64)):
    """Pad token batches to the smallest bucket length that fits (padding="longest" gives a new shape
    almost every batch, and each new shape is a torch.compile recompilation). Masked pooling makes the
    extra padding invisible to the embeddings."""
    import torch

    n = ids.shape[1]
    to = next((b for b in buckets if b >= n), n)
    if to == n:
        return ids, mask
    return (torch.nn.functional.pad(ids, (0, to - n), value=pad_id), torch.nn.functional.pad(mask, (0, to - n)))


class NormalisedImages:
    """Images ``rows`` of a store (default all), normalised (module level so spawned workers can pickle it)."""

    def __init__(self, store: ImageStore, rows: range | None = None):
        self.store, self.rows = store, rows if rows is not None else range(len(store.paths))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(normalize(self.store.get(self.rows[i]), self.store.spec))


def image_batches(store: ImageStore, batch_size: int, num_workers: int = 0, rows: range | None = None):
    """Each distinct image once (or those in ``rows``), normalised, in order (feature caches, evaluation)."""
    import torch

    # its own generator: building a cache must not advance the global RNG a training run depends on
    return torch.utils.data.DataLoader(NormalisedImages(store, rows), batch_size=batch_size,
                                       num_workers=num_workers, generator=torch.Generator())
