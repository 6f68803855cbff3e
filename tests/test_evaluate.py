"""Metric functions on hand-made embeddings whose answers are known by construction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lugha.records import Record, write_manifest
from lugha.training.evaluate import (chance_recall, evaluate_embeddings, hits_at_k, label_accuracy, label_hits,
                                     recall_at_k, retention, retrieval_metrics, summarise)


def test_recall_at_k_known_ranks():
    # query 0: positive ranks 1st; query 1: 2nd; query 2: 6th
    scores = np.array([[0.9, 0.1, 0.2, 0.0, 0.0, 0.0],
                       [0.9, 0.8, 0.1, 0.0, 0.0, 0.0],
                       [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]])
    pos = np.zeros_like(scores, dtype=bool)
    pos[0, 0], pos[1, 1], pos[2, 5] = True, True, True
    r = recall_at_k(scores, pos, ks=(1, 2, 5, 6))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 5: pytest.approx(2 / 3), 6: 1.0}


def test_recall_any_positive_counts_and_ties_count_against():
    scores = np.array([[0.5, 0.9, 0.7], [0.3, 0.3, 0.3]])
    pos = np.array([[True, False, True], [True, False, False]])
    r = recall_at_k(scores, pos, ks=(1, 2, 3))
    # query 0: best positive (0.7) is beaten by one negative -> rank 2; query 1: all tied -> rank 3
    assert r == {1: 0.0, 2: 0.5, 3: 1.0}


def test_recall_skips_queries_without_positives():
    r = recall_at_k(np.eye(3), np.array([[True, False, False], [False] * 3, [False, False, True]]), ks=(1,))
    assert r[1] == 1.0
    assert math.isnan(recall_at_k(np.eye(2), np.zeros((2, 2), bool), ks=(1,))[1])


def test_chance_recall_matches_simulation():
    rng = np.random.default_rng(0)
    n, m, k = 20, 3, 5
    sims = [bool(set(rng.permutation(n)[:k]) & set(range(m))) for _ in range(20000)]
    assert chance_recall(n, [m], k) == pytest.approx(np.mean(sims), abs=0.01)
    assert chance_recall(10, [1], 1) == pytest.approx(0.1)
    assert chance_recall(4, [1], 10) == 1.0


def test_retrieval_metrics_groups_as_ground_truth():
    # 3 images, 5 texts; image 0 has two captions (groups a, a). Embeddings are one-hot by group,
    # so every query finds its group first: all recalls are 1.
    eye = np.eye(3)
    img = eye
    txt = eye[[0, 0, 1, 2, 2]] + 0.01 * np.arange(5)[:, None]
    m = retrieval_metrics(img, txt, ["a", "b", "c"], ["a", "a", "b", "c", "c"], ks=(1, 5))
    assert m["i2t_r1"] == 1.0 and m["t2i_r1"] == 1.0
    assert m["chance_t2i_r1"] == pytest.approx(1 / 3)
    # image a has 2 of 5 texts: chance of a hit in 1 draw is 2/5; b: 1/5; c: 2/5
    assert m["chance_i2t_r1"] == pytest.approx((2 / 5 + 1 / 5 + 2 / 5) / 3)
    # a swapped pair of texts breaks exactly those queries
    bad = retrieval_metrics(img, txt[[0, 1, 3, 2, 4]], ["a", "b", "c"], ["a", "a", "b", "c", "c"], ks=(1,))
    assert bad["t2i_r1"] == pytest.approx(3 / 5)


def test_label_accuracy_and_ties():
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    img = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 0.0], [1.0, 1.0]])
    assert label_accuracy(img, classes, [0, 1, 1, 0]) == pytest.approx(2 / 4)  # row 3 is a tie: wrong


def test_retention_and_summary():
    assert retention({"a": 0.4, "b": 0.5}, {"a": 0.5, "b": 0.0}, ["a", "b"])["a"] == pytest.approx(80.0)
    assert math.isnan(retention({"b": 0.5}, {"b": 0.0}, ["b"])["b"])
    s = summarise({"en": {"i2t_r1": 0.5, "t2i_r1": 0.7, "n_images": 3}, "sw": {"i2t_r1": 0.1, "t2i_r1": 0.3}})
    assert s["i2t_r1"] == pytest.approx(0.3) and s["mean_r1"] == pytest.approx(0.4)
    assert "n_images" not in s


def test_evaluate_embeddings_per_language(tmp_path):
    from lugha.training.data import PairSet

    rows = []
    for lang in ("en", "sw"):
        for g, label in (("g0", "animal"), ("g1", "food"), ("g2", "animal")):
            rows.append(Record(id=f"{lang}-{g}", image=f"{g}.png", text=f"{g} {lang}", lang=lang, split="test",
                               label=label, group=g))
    write_manifest(tmp_path / "m.jsonl", rows)
    pairs = PairSet(tmp_path / "m.jsonl", "test")
    assert pairs.image_paths == [str(tmp_path / f"g{i}.png") for i in range(3)]
    img = np.eye(3)
    txt = np.eye(3)[[0, 1, 2, 0, 2, 1]]  # sw: texts of g1 and g2 swapped
    class_emb = {"animal": [1.0, 0.0, 1.0], "food": [0.0, 1.0, 0.0]}
    report = evaluate_embeddings(pairs, img, txt, lambda texts: np.array([class_emb[t] for t in texts]))
    en, sw = report["languages"]["en"], report["languages"]["sw"]
    assert en["i2t_r1"] == 1.0 and en["t2i_r1"] == 1.0 and en["label_acc"] == 1.0
    assert sw["i2t_r1"] == pytest.approx(1 / 3) and sw["t2i_r1"] == pytest.approx(1 / 3)
    assert en["n_images"] == 3 and en["n_labels"] == 2 and en["chance_label_acc"] == 0.5
    assert en["n_labelled"] == 3  # every image has a label here
    assert report["mean"]["mean_r1"] == pytest.approx((1 + 1 / 3) / 2)


def test_per_item_hits_average_to_the_metrics():
    scores = np.array([[0.9, 0.1], [0.9, 0.8], [0.3, 0.3]])
    pos = np.array([[True, False], [False, True], [False, False]])  # the last query has no positive: left out
    assert hits_at_k(scores, pos).tolist() == [True, False]
    assert hits_at_k(scores, pos).mean() == recall_at_k(scores, pos, ks=(1,))[1]
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    img = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 0.0], [1.0, 1.0]])
    assert label_hits(img, classes, [0, 1, 1, 0]).tolist() == [True, True, False, False]  # a tie is a miss


def test_evaluate_embeddings_exposes_the_items_without_changing_the_numbers(tmp_path):
    from lugha.training.data import PairSet

    rows = [Record(id=f"{lang}-{g}", image=f"{g}.png", text=f"{g} {lang}", lang=lang, split="test", label=label,
                   group=g) for lang in ("en", "sw") for g, label in (("g0", "animal"), ("g1", "food"), ("g2", "animal"))]
    write_manifest(tmp_path / "m.jsonl", rows)
    pairs = PairSet(tmp_path / "m.jsonl", "test")
    img, txt = np.eye(3), np.eye(3)[[0, 1, 2, 0, 2, 1]]
    class_emb = {"animal": [1.0, 0.0, 1.0], "food": [0.0, 1.0, 0.0]}
    encode = lambda texts: np.array([class_emb[t] for t in texts])  # noqa: E731
    plain = evaluate_embeddings(pairs, img, txt, encode)
    report = evaluate_embeddings(pairs, img, txt, encode, items=True)
    assert report["languages"] == plain["languages"] and "items" not in plain
    sw = report["items"]["sw"]
    assert sw["i2t_r1"].tolist() == [True, False, False] and sw["t2i_r1"].tolist() == [True, False, False]
    assert report["item_ids"]["sw"]["t2i_r1"] == ["sw-g0", "sw-g1", "sw-g2"]
    # each caption's image: the two languages' captions of one group are one cluster
    images = report["item_images"]
    assert images["sw"]["t2i_r1"] == images["en"]["t2i_r1"] == [pairs.image_paths[int(i)] for i in pairs.image_index[:3]]
    assert len(set(images["sw"]["t2i_r1"])) == 3 and images["sw"]["i2t_r1"] == report["item_ids"]["sw"]["i2t_r1"]
    for lang, per in report["items"].items():
        for metric, hits in per.items():
            assert hits.mean() == pytest.approx(report["languages"][lang][metric])
