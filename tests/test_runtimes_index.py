"""EmbeddingIndex: float32 and int8 agree, ids survive save/load, bad input is a typed error."""
from __future__ import annotations

import numpy as np
import pytest

from lugha.errors import ConfigError, DataError
from lugha.runtimes import EmbeddingIndex, l2_normalize


def _data(n=500, d=64, q=50, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)).astype(np.float32)
    # queries near known rows, so the right answer is known
    truth = rng.integers(0, n, q)
    queries = base[truth] + 0.3 * rng.normal(size=(q, d)).astype(np.float32)
    return base, queries, truth


def test_float32_search_is_exact_cosine_ranking():
    base, queries, truth = _data()
    index = EmbeddingIndex.from_embeddings(base)
    scores, ids = index.search(queries, k=5)
    full = l2_normalize(queries) @ l2_normalize(base).T
    expected = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), atol=1e-6)
    assert (ids[:, 0] == truth).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_int8_agrees_with_float32_and_is_four_times_smaller():
    base, queries, truth = _data()
    f32 = EmbeddingIndex.from_embeddings(base)
    i8 = EmbeddingIndex.from_embeddings(base, precision="int8")
    s32, id32 = f32.search(queries, k=10)
    s8, id8 = i8.search(queries, k=10)
    assert (id8[:, 0] == id32[:, 0]).all()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(id8, id32)])
    assert overlap >= 0.9
    # one rounding step per component: |error| <= sum_i |q_i| * s / 2 <= sqrt(d) * max|v| / 254
    assert np.abs(i8.scores(queries) - f32.scores(queries)).max() < np.sqrt(64) / 254
    assert i8.vectors.dtype == np.int8 and i8.nbytes < f32.nbytes / 3.5


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_save_load_roundtrip_with_string_ids(tmp_path, precision):
    base, queries, _ = _data(n=20, d=8, q=3)
    names = np.array([f"img_{i:03d}.jpg" for i in range(20)], dtype=object)
    index = EmbeddingIndex.from_embeddings(base, ids=names, precision=precision)
    path = index.save(tmp_path / "gallery.index")  # any suffix: the file is written where asked
    assert path.is_file() and not (tmp_path / "gallery.index.npz").exists()
    back = EmbeddingIndex.load(path)
    assert (back.precision, back.dim, len(back)) == (precision, 8, 20)
    s1, i1 = index.search(queries, 3)
    s2, i2 = back.search(queries, 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert str(i2[0, 0]).startswith("img_")


def test_add_appends_and_keeps_ids():
    base, _, _ = _data(n=10, d=4)
    index = EmbeddingIndex(4)
    index.add(base[:6])
    index.add(base[6:])
    assert len(index) == 10 and list(index.ids) == list(range(10))
    _, ids = index.search(base[7], k=1)
    assert ids[0, 0] == 7
    scores, ids = index.search(base[:2], k=50)  # k capped at the index size
    assert ids.shape == (2, 10)


def test_bad_input_is_typed():
    index = EmbeddingIndex(4)
    with pytest.raises(DataError, match=r"must be \[N, 4\]"):
        index.add(np.zeros((3, 5)))
    with pytest.raises(DataError, match="2 ids for 3 embeddings"):
        index.add(np.ones((3, 4)), ids=[1, 2])
    with pytest.raises(ConfigError, match="index.precision"):
        EmbeddingIndex(4, precision="int4")
    index.add(np.ones((2, 4)), ids=["a", "b"])
    with pytest.raises(DataError, match="named ids"):
        index.add(np.ones((1, 4)))
    with pytest.raises(DataError, match=r"queries must be \[Q, 4\]"):
        index.search(np.ones((1, 3)))


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="not an embedding index"):
        EmbeddingIndex.load(tmp_path / "x.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not an embedding index"):
        EmbeddingIndex.load(tmp_path / "junk.npz")
