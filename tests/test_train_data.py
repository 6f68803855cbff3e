"""The training data path: row selection, seeded batches, the resized-image cache, workers."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch
import pytest
from PIL import Image

from lugha.records import Record, write_manifest
from lugha.errors import DataError
from lugha.preprocess import PreprocessSpec, preprocess_image
from lugha.training.data import (ImageStore, PairSet, PixelDataset, epoch_batches, image_batches, make_loader,
                                 to_model_input)


def make_dataset(root, n_images=12, langs=("en", "sw", "yo"), uneven=False):
    """Real PNG/JPEG files (odd sizes, an RGBA one) captioned in several languages."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        arr = rng.integers(0, 256, (20 + i, 30 + 2 * i, 3), dtype=np.uint8)
        if i % 4 == 3:
            Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 128, np.uint8)]), "RGBA").save(root / f"img/{i}.png")
            name = f"img/{i}.png"
        else:
            name = f"img/{i}.{'jpg' if i % 2 else 'png'}"
            Image.fromarray(arr).save(root / name)
        for j, lang in enumerate(langs):
            if uneven and j and i % (j + 1):
                continue
            rows.append(Record(id=f"{i}-{lang}", image=name, text=f"picture {i} in {lang}", lang=lang,
                               split="train" if i < n_images - 3 else "test", label=f"class{i % 3}", group=f"g{i}"))
    write_manifest(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


def test_pairset_selects_split_and_languages(tmp_path):
    m = make_dataset(tmp_path)
    pairs = PairSet(m, "train", ["en", "yo"])
    assert len(pairs) == 9 * 2 and pairs.languages == ("en", "yo")
    assert len(pairs.image_paths) == 9  # each image once, though captioned twice
    assert pairs.image_paths[pairs.image_index[1]] == str(tmp_path / pairs.records[1].image)
    with pytest.raises(DataError, match="split='val'"):
        PairSet(m, "val")
    with pytest.raises(DataError, match="not found"):
        PairSet(tmp_path / "nope.jsonl")


def test_epoch_batches_are_seeded_and_group_unique(tmp_path):
    pairs = PairSet(make_dataset(tmp_path, n_images=30), "train")
    args = (pairs.langs, pairs.groups, 8)
    a, b = epoch_batches(*args, seed=0, epoch=1), epoch_batches(*args, seed=0, epoch=1)
    assert a == b != epoch_batches(*args, seed=0, epoch=2) and a != epoch_batches(*args, seed=1, epoch=1)
    flat = [i for batch in a for i in batch]
    assert len(flat) == len(set(flat))  # no row twice in an epoch
    assert len(flat) >= len(pairs) - 8
    for batch in a:
        assert len({pairs.groups[i] for i in batch}) == len(batch)  # an image's captions are never negatives
        assert len(batch) >= 4
    loose = epoch_batches(*args, seed=0, epoch=1, unique_groups=False)
    assert any(len({pairs.groups[i] for i in batch}) < len(batch) for batch in loose)


def test_balanced_languages_give_each_language_an_equal_share(tmp_path):
    pairs = PairSet(make_dataset(tmp_path, n_images=40, uneven=True), "train")
    counts = Counter(pairs.langs.tolist())
    assert counts["en"] > 2 * counts["yo"]
    batches = epoch_batches(pairs.langs, pairs.groups, 10, seed=0, epoch=0, balance_languages=True)
    drawn = Counter(pairs.langs[i] for b in batches for i in b)
    total = sum(drawn.values())
    assert all(abs(drawn[lang] / total - 1 / 3) < 0.06 for lang in counts), drawn


def test_image_store_matches_kit_preprocess_and_tracks_changes(tmp_path):
    m = make_dataset(tmp_path, n_images=6)
    pairs = PairSet(m)
    spec = PreprocessSpec(size=16, resize="shortest_crop", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    store = ImageStore(pairs.image_paths, spec, tmp_path / "cache")
    store.build(num_workers=2, show_progress=False)
    assert store.cache_path.exists()
    cached = np.load(store.cache_path, mmap_mode="r")
    assert cached.shape == (6, 16, 16, 3) and cached.dtype == np.uint8
    ds = PixelDataset(pairs, store)
    for i in (0, 3, 5):
        x, idx = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (16, 16, 3)  # workers ship uint8; normalised on device
        ref = preprocess_image(pairs.image_paths[pairs.image_index[i]], spec)
        got = to_model_input(x[None], store.spec)[0]
        assert idx == i and np.array_equal(got.numpy(), ref)  # same float32 arithmetic as the kit: bit-exact
        last = to_model_input(x[None], store.spec, channels_last=True)
        assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last[0], got)
    uncached = ImageStore(pairs.image_paths, spec, use_cache=False)
    assert np.array_equal(uncached.get(2), store.get(2))
    # the key is the images' bytes (tests/test_image_cache.py): a touch keeps it, an edit changes it
    key = store.key()
    st = os.stat(pairs.image_paths[0])
    os.utime(pairs.image_paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ImageStore(pairs.image_paths, spec, tmp_path / "cache").key() == key
    with open(pairs.image_paths[0], "ab") as f:
        f.write(b"\0")
    assert ImageStore(pairs.image_paths, spec, tmp_path / "cache").key() != key


def test_loader_with_workers_gives_the_batches_in_order(tmp_path):
    pairs = PairSet(make_dataset(tmp_path, n_images=8), "train")
    store = ImageStore(pairs.image_paths, PreprocessSpec(size=12), tmp_path / "cache")
    store.build(show_progress=False)
    batches = epoch_batches(pairs.langs, pairs.groups, 4, seed=3, epoch=0)
    flip = np.zeros(len(pairs), bool)
    flip[batches[0][0]] = True
    seen = [(x, idx.tolist()) for x, idx in make_loader(PixelDataset(pairs, store, flip), batches, 2, seed=0)]
    assert [idx for _, idx in seen] == batches
    x0, _ = PixelDataset(pairs, store)[batches[0][0]]
    assert np.array_equal(seen[0][0][0].numpy(), x0.numpy()[:, ::-1])  # HWC, flipped along width
    whole = np.concatenate([b.numpy() for b in image_batches(store, 5)])
    assert whole.shape == (len(pairs.image_paths), 3, 12, 12)


def test_undecodable_image_names_the_file(tmp_path):
    m = make_dataset(tmp_path, n_images=3)
    pairs = PairSet(m)
    (tmp_path / pairs.records[0].image).write_bytes(b"not an image")
    store = ImageStore(pairs.image_paths, PreprocessSpec(size=12), use_cache=False)
    with pytest.raises(DataError, match=pairs.records[0].image.split("/")[-1]):
        store.get(0)
