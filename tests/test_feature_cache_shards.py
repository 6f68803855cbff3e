"""The sharded feature cache: N ranks write the bytes 1 rank writes, and any N reuses them."""
from __future__ import annotations

import contextlib
import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch

from lugha.config import get_model_config
from lugha.errors import DataError
from lugha.training.data import PairSet
from lugha.training.feature_cache import (INDEX, FeatureCache, ShardedFeatures, build_shards, compute_image_features,
                                          compute_text_features, finish_shards, frozen_weights_digest,
                                          image_inputs_key, text_inputs_key)
from lugha.training.image_cache import ImageStore
from lugha.training.model import build_model, load_text_tokenizer

ROWS, BATCH = 8, 4  # shards of 8 rows, batches of 4: shard edges are batch edges


@pytest.fixture(scope="module")
def tiny():
    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    return cfg, tok, build_model(cfg, tok.vocab_size).eval()


def parts(tiny, manifest, cache):
    cfg, tok, model = tiny
    pairs = PairSet(manifest, "train", ["en", "sw"])  # two languages: fewer captions to encode
    store = ImageStore(pairs.image_paths, cfg.preprocess, cache)
    store.build(show_progress=False)
    fc = FeatureCache(frozen_weights_digest(model), cfg.to_dict(), "fp32", cache)
    image = lambda r=None: compute_image_features(model, store, BATCH, "cpu", contextlib.nullcontext,  # noqa: E731
                                                  rows=r)
    text = lambda r: compute_text_features(model, tok, pairs.texts[r.start:r.stop], BATCH, "cpu",  # noqa: E731
                                           contextlib.nullcontext)
    return pairs, store, fc, image, text


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_two_ranks_write_the_bytes_one_rank_writes(tiny, demo_small, tmp_path):
    pairs, store, fc1, image, text = parts(tiny, demo_small, tmp_path / "one")
    n = len(pairs.image_paths)
    assert n > 2 * ROWS  # at least three shards, so both ranks write and one writes two
    one = fc1.get_or_build_sharded("image", image_inputs_key(store), n, image, rows_per_shard=ROWS,
                                   show_progress=False)
    *_, fc2, image2, text2 = parts(tiny, demo_small, tmp_path / "two")
    folder = fc2.shard_folder("image", image_inputs_key(store), ROWS)
    for rank in (1, 0):  # the two ranks, one after the other (the gloo test below runs them at once)
        build_shards(folder, n, image2, rank=rank, world_size=2, rows_per_shard=ROWS, show_progress=False)
    with pytest.raises(DataError, match="index"):
        ShardedFeatures(folder)  # no index until every shard is checked
    finish_shards(folder, n, ROWS)
    assert files(folder) == files(one.folder) and INDEX in files(folder)
    for name in files(folder):
        assert filecmp.cmp(folder / name, one.folder / name, shallow=False), name
    # and the values are the single-file cache's (same batches: shard edges are batch edges)
    whole = fc1.get_or_build("image", image_inputs_key(store), n, image, "single", show_progress=False)
    assert np.array_equal(np.asarray(one), whole) and one.shape == whole.shape
    rows = np.array([n - 1, 0, ROWS, ROWS - 1, 3, n - 1])
    assert np.array_equal(one[rows], whole[rows]) and np.array_equal(one[2:n - 1], whole[2:n - 1])
    assert np.array_equal(one[ROWS + 1], whole[ROWS + 1]) and np.array_equal(one[-1], whole[-1])
    # texts shard the same way
    t1 = fc1.get_or_build_sharded("text", text_inputs_key(pairs.texts), len(pairs), text, rows_per_shard=ROWS,
                                  show_progress=False)
    t2 = fc2.get_or_build_sharded("text", text_inputs_key(pairs.texts), len(pairs), text2, rank=0, world_size=1,
                                  rows_per_shard=ROWS, show_progress=False)
    for name in files(t1.folder):
        assert filecmp.cmp(t1.folder / name, t2.folder / name, shallow=False), name


def test_another_world_size_reuses_or_finishes_the_cache(tiny, demo_small, tmp_path):
    pairs, store, fc, image, _ = parts(tiny, demo_small, tmp_path)
    n, key = len(pairs.image_paths), image_inputs_key(store)
    built = fc.get_or_build_sharded("image", key, n, image, rank=0, world_size=1, rows_per_shard=ROWS,
                                    show_progress=False)
    reference = {name: (built.folder / name).read_bytes() for name in files(built.folder)}

    def never(rows):
        raise AssertionError(f"rows {rows} recomputed")

    for rank in range(3):  # three ranks find the index: nothing is computed
        again = fc.get_or_build_sharded("image", key, n, never, rank=rank, world_size=3, rows_per_shard=ROWS)
        assert np.array_equal(np.asarray(again), np.asarray(built))
    # a build killed part-way (one shard and the index gone): 3 ranks compute only the missing shard
    (built.folder / INDEX).unlink()
    (built.folder / "shard-00001.npy").unlink()
    computed = []

    def counting(rows):
        computed.append((rows.start, rows.stop))
        yield from image(rows)

    for rank in range(3):
        build_shards(built.folder, n, counting, rank=rank, world_size=3, rows_per_shard=ROWS, show_progress=False)
    finish_shards(built.folder, n, ROWS)
    assert computed == [(ROWS, 2 * ROWS)]
    assert {name: (built.folder / name).read_bytes() for name in files(built.folder)} == reference
    with pytest.raises(ValueError, match="rank 3"):
        build_shards(built.folder, n, never, rank=3, world_size=3, rows_per_shard=ROWS)


def _gloo_rank(rank: int, world: int, init: str, manifest: str, cache: str, threads: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(threads)  # the parent's: the tiny twin's random init depends on the thread count
        cfg = get_model_config("test-tiny")
        tok = load_text_tokenizer(cfg)
        pairs, store, fc, image, _ = parts((cfg, tok, build_model(cfg, tok.vocab_size).eval()), manifest, cache)
        feats = fc.get_or_build_sharded("image", image_inputs_key(store), len(pairs.image_paths), image, rank=rank,
                                        world_size=world, barrier=dist.barrier, rows_per_shard=ROWS,
                                        show_progress=False)
        assert feats.shape[0] == len(pairs.image_paths)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_write_the_bytes_one_process_writes(tiny, demo_small, tmp_path):
    import torch.multiprocessing as mp

    pairs, store, fc, image, _ = parts(tiny, demo_small, tmp_path / "one")
    one = fc.get_or_build_sharded("image", image_inputs_key(store), len(pairs.image_paths), image,
                                  rows_per_shard=ROWS, show_progress=False)
    ImageStore(pairs.image_paths, tiny[0].preprocess, tmp_path / "two").build(show_progress=False)
    mp.spawn(_gloo_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", str(demo_small), str(tmp_path / "two"),
                                    torch.get_num_threads()),
             nprocs=2, join=True)
    two = FeatureCache(frozen_weights_digest(tiny[2]), tiny[0].to_dict(), "fp32", tmp_path / "two").shard_folder(
        "image", image_inputs_key(store), ROWS)
    assert files(two) == files(one.folder)
    for name in files(two):
        assert filecmp.cmp(two / name, one.folder / name, shallow=False), name
