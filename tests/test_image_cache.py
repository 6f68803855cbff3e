"""The image cache and its loader: bit-exact to the PNG path, keyed by content + size, crops/flips on device."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from lugha.errors import ConfigError, DataError
from lugha.preprocess import PreprocessSpec
from lugha.records import Record, write_manifest
from lugha.training.data import PairSet, PixelDataset, batch_source, epoch_batches, hflip_mask, make_loader
from lugha.training.image_cache import CachedBatches, ImageStore, decode_resized
from lugha.training.transforms import augment_on_device, crop_boxes

SPEC = PreprocessSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def dataset(root, n=10):
    """PNG and JPEG files of odd sizes (one RGBA), each captioned in two languages."""
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        arr = rng.integers(0, 256, (18 + i, 25 + 3 * i, 3), dtype=np.uint8)
        name = f"img/{i}.{'jpg' if i % 3 == 1 else 'png'}"
        im = Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 90, np.uint8)]), "RGBA") if i == 2 \
            else Image.fromarray(arr)
        im.save(root / name)
        rows += [Record(id=f"{i}-{lang}", image=name, text=f"{i} {lang}", lang=lang, split="train", group=f"g{i}")
                 for lang in ("en", "sw")]
    write_manifest(root / "manifest.jsonl", rows)
    return PairSet(root / "manifest.jsonl")


def built(pairs, cache, spec=SPEC):
    store = ImageStore(pairs.image_paths, spec, cache)
    store.build(show_progress=False)
    return store


def batches_of(source):
    return [(x.numpy().copy(), rows.tolist()) for x, rows, *_ in source]


@pytest.mark.parametrize("augment", ["none", "hflip"])
def test_cache_loader_gives_the_png_paths_bytes(tmp_path, augment):
    pairs = dataset(tmp_path)
    store = built(pairs, tmp_path / "cache")
    for i, path in enumerate(pairs.image_paths):  # the memmap row is the decoded PNG/JPEG, bit for bit
        assert np.array_equal(store.array()[i], decode_resized(path, store.spec))
    order = epoch_batches(pairs.langs, pairs.groups, 4, seed=5, epoch=1)
    common = dict(seed=5, epoch=1, augment=augment)
    workers = batches_of(batch_source(pairs, store, order, loader="workers", **common))
    cached = batches_of(batch_source(pairs, store, order, loader="cache", **common))
    assert [r for _, r in cached] == order == [r for _, r in workers]
    for (a, _), (b, _) in zip(cached, workers):
        assert a.dtype == b.dtype == np.uint8 and np.array_equal(a, b)
    if augment == "hflip":  # some rows really were mirrored, so the comparison saw the flip path
        flip = hflip_mask(5, 1, len(pairs))
        row = next(r for b in order for r in b if flip[r])
        assert not np.array_equal(PixelDataset(pairs, store, flip)[row][0], PixelDataset(pairs, store)[row][0])


def test_cache_key_follows_image_bytes_and_size_not_timestamps(tmp_path):
    pairs = dataset(tmp_path, n=5)
    store = built(pairs, tmp_path / "cache")
    path = pairs.image_paths[3]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: the same cache
    assert ImageStore(pairs.image_paths, SPEC, tmp_path / "cache").cache_path == store.cache_path
    old = store.array()[3].copy()
    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(path)  # new bytes, old timestamp: rebuilt
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = built(pairs, tmp_path / "cache")
    assert changed.cache_path != store.cache_path and changed.cache_path.exists()
    assert np.array_equal(changed.array()[3], np.full((16, 16, 3), 7, np.uint8)) and not np.array_equal(old, 7)
    assert np.array_equal(changed.array()[:3], store.array()[:3])
    bigger = built(pairs, tmp_path / "cache", PreprocessSpec(size=24, mean=SPEC.mean, std=SPEC.std))
    assert bigger.cache_path != changed.cache_path and bigger.array().shape == (5, 24, 24, 3)
    # mean/std are applied on the device after the cache: they do not make another cache
    renorm = ImageStore(pairs.image_paths, PreprocessSpec(size=16), tmp_path / "cache")
    assert renorm.cache_path == changed.cache_path


def test_cache_key_is_remembered_until_a_file_changes(tmp_path, monkeypatch):
    from lugha.training import image_cache

    pairs = dataset(tmp_path, n=4)
    key = built(pairs, tmp_path / "cache").key()
    assert len(list((tmp_path / "cache" / "images" / "keys").iterdir())) == 1

    def unread(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(image_cache, "_file_digest", unread)
    assert ImageStore(pairs.image_paths, SPEC, tmp_path / "cache").key() == key  # stat unchanged: no reading
    st = os.stat(pairs.image_paths[1])
    os.utime(pairs.image_paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, but a new ctime
    with pytest.raises(AssertionError, match="hashed again"):
        ImageStore(pairs.image_paths, SPEC, tmp_path / "cache")
    with pytest.raises(AssertionError, match="hashed again"):  # no memo without a cache folder
        ImageStore(pairs.image_paths, SPEC, use_cache=False).key()


def test_local_rank_zero_builds_and_every_rank_waits(tmp_path):
    pairs = dataset(tmp_path, n=3)
    waited = []
    other = ImageStore(pairs.image_paths, SPEC, tmp_path / "cache")
    other.build(show_progress=False, rank=1, barrier=lambda: waited.append(1))
    assert waited == [1] and not other.cache_path.exists()  # rank 1 decodes nothing
    first = ImageStore(pairs.image_paths, SPEC, tmp_path / "cache")
    first.build(show_progress=False, rank=0, barrier=lambda: waited.append(0))
    assert waited == [1, 0] and first.cache_path.exists() and np.array_equal(other.array(), first.array())


def test_crop_boxes_are_seeded_and_inside_the_image():
    a, b = crop_boxes(0, 3, 500), crop_boxes(0, 3, 500)
    assert np.array_equal(a, b) and not np.array_equal(a, crop_boxes(0, 4, 500))
    left, top, w, h = a.T
    assert (left >= 0).all() and (top >= 0).all() and (left + w <= 1 + 1e-6).all() and (top + h <= 1 + 1e-6).all()
    area = w * h
    assert area.min() >= 0.6 - 1e-5 and area.max() <= 1.0 + 1e-5 and area.std() > 0.05
    aspect = w / h
    assert aspect.min() >= 0.75 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4


def test_device_augment_whole_box_is_exact_and_crops_resample():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 12, 12, 3), generator=g, dtype=torch.uint8)
    whole = np.tile(np.array([[0, 0, 1, 1]], np.float32), (3, 1))
    assert torch.equal(augment_on_device(x, whole), x)  # a full-image "crop" is the image, bit for bit
    flip = np.array([True, False, True])
    mirrored = augment_on_device(x, whole, flip)
    assert torch.equal(mirrored, augment_on_device(x, None, flip))
    assert torch.equal(mirrored[0], x[0].flip(1)) and torch.equal(mirrored[1], x[1])
    # the left half, stretched to the full width: bilinear upsampling of those 6 columns
    half = np.tile(np.array([[0, 0, 0.5, 1]], np.float32), (3, 1))
    got = augment_on_device(x, half).permute(0, 3, 1, 2).float()
    ref = torch.nn.functional.interpolate(x[:, :, :6].permute(0, 3, 1, 2).float(), size=(12, 12), mode="bilinear",
                                          align_corners=False)
    # the last column differs by design: it samples half a pixel past the box, into the image's column 6
    # (what a crop of a larger picture sees), where interpolate of the 6-column slice repeats its edge
    assert (got - ref.round())[..., :11].abs().max() <= 1
    assert augment_on_device(x, half).dtype == torch.uint8 and augment_on_device(x, half).shape == x.shape


def test_cache_loader_crops_are_seeded_per_epoch_and_need_the_cache_loader(tmp_path):
    pairs = dataset(tmp_path)
    store = built(pairs, tmp_path / "cache")
    order = epoch_batches(pairs.langs, pairs.groups, 4, seed=0, epoch=0)
    run = lambda epoch: batches_of(batch_source(pairs, store, order, seed=0, epoch=epoch,  # noqa: E731
                                                augment="crop_hflip", loader="cache"))
    first, again, other = run(0), run(0), run(1)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))
    plain = batches_of(batch_source(pairs, store, order, seed=0, epoch=0, loader="cache"))
    assert first[0][0].shape == plain[0][0].shape and not np.array_equal(first[0][0], plain[0][0])
    with pytest.raises(ConfigError, match="data.loader: cache"):
        batch_source(pairs, store, order, seed=0, epoch=0, augment="crop", loader="workers")
    with pytest.raises(ConfigError, match="data.loader"):
        batch_source(pairs, store, order, seed=0, epoch=0, loader="dali")
    with pytest.raises(ValueError, match="prepare"):
        batch_source(pairs, store, order, seed=0, epoch=0, prepare=lambda rows: ())


def test_cache_loader_prepares_on_its_thread_and_reports_failures(tmp_path):
    pairs = dataset(tmp_path, n=6)
    store = built(pairs, tmp_path / "cache")
    order = [[0, 2, 4], [1, 3], [5, 6, 7]]
    got = list(CachedBatches(store, pairs.image_index, order, prepare=lambda rows: ([pairs.texts[r] for r in rows],)))
    assert [texts for *_, texts in got] == [[pairs.texts[r] for r in b] for b in order]

    def broken(rows):
        if 5 in rows:
            raise DataError("caption 5 is unreadable")
        return ()

    seen = []
    with pytest.raises(DataError, match="caption 5"):
        for _, rows in CachedBatches(store, pairs.image_index, order, prepare=broken):
            seen.append(rows.tolist())
    assert seen == order[:2]
    with pytest.raises(DataError, match="not built"):
        CachedBatches(ImageStore(pairs.image_paths, SPEC, tmp_path / "elsewhere"), pairs.image_index, order)
    with pytest.raises(DataError, match="off"):
        ImageStore(pairs.image_paths, SPEC, use_cache=False).array()


def test_reused_buffers_never_overwrite_a_batch_in_use(tmp_path):
    """The ring (pinned on CUDA) with one batch of prefetch: every buffer is reused many times over, and
    the batches, all held at once, are still the fresh-array path's."""
    pairs = dataset(tmp_path, n=9)
    store = built(pairs, tmp_path / "cache")
    order = epoch_batches(pairs.langs, pairs.groups, 3, seed=1, epoch=0, unique_groups=False)
    assert len(order) >= 5
    fresh = list(CachedBatches(store, pairs.image_index, order, ring=False))
    reused = list(CachedBatches(store, pairs.image_index, order, prefetch=1, ring=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(fresh, reused))
    assert len({x.data_ptr() for x, _ in reused}) == len(reused)  # each batch its own tensor, not a buffer view


def test_loader_workers_default_is_todays_loader(tmp_path):
    """batch_source(loader="workers") is the trainer's previous make_loader call: same seeds, same bytes."""
    pairs = dataset(tmp_path, n=6)
    store = built(pairs, tmp_path / "cache")
    order = epoch_batches(pairs.langs, pairs.groups, 4, seed=2, epoch=3)
    flip = hflip_mask(2, 3, len(pairs))
    before = batches_of(make_loader(PixelDataset(pairs, store, flip), order, 0, seed=2 * 1_000_003 + 3))
    now = batches_of(batch_source(pairs, store, order, seed=2, epoch=3, augment="hflip"))
    assert all(np.array_equal(a, b) and ra == rb for (a, ra), (b, rb) in zip(before, now))


def test_config_switches_the_cache_loader_on_and_checks_its_needs():
    from lugha.training.train_config import DataConfig

    assert DataConfig().loader == "workers" and DataConfig().augment == "none"  # the default path is unchanged
    assert DataConfig(loader="cache", augment="crop_hflip").loader == "cache"
    with pytest.raises(ConfigError, match="data.loader: cache"):
        DataConfig(augment="crop")
    with pytest.raises(ConfigError, match="image_cache must be true"):
        DataConfig(loader="cache", image_cache=False)
