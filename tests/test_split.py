"""Group-wise train/val/test assignment: deterministic, seedable, never splits a group, stable on growth."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from lugha.cli import main
from lugha.records import Record, read_manifest, write_manifest
from lugha.data.split import assign_splits, parse_ratios, split_counts
from lugha.errors import DataError

LANGS = ("en", "ha", "sw")


def make_records(n_groups: int, start: int = 0) -> list[Record]:
    """Each group is one image captioned in three languages (two captions in English)."""
    out = []
    for g in range(start, start + n_groups):
        for lang in LANGS:
            for k in range(2 if lang == "en" else 1):
                out.append(Record(id=f"r{g}-{lang}-{k}", image=f"img/{g}.jpg", text=f"caption {g} {k}", lang=lang))
    return out


def splits_by_group(records):
    groups = defaultdict(set)
    for r in records:
        groups[r.group_key].add(r.split)
    return groups


def test_deterministic_and_seed_changes_the_split():
    recs = make_records(300)
    a, b = assign_splits(recs, seed=0), assign_splits(recs, seed=0)
    assert [r.split for r in a] == [r.split for r in b]
    c = assign_splits(recs, seed=1)
    moved = sum(x.split != y.split for x, y in zip(a, c))
    assert moved > len(recs) // 10  # a new seed is a new draw, not a relabelling of a few rows
    assert all(r.split == "" for r in recs)  # inputs are not mutated


def test_a_group_is_never_in_two_splits():
    recs = make_records(200)
    out = assign_splits(recs, seed=3)
    groups = splits_by_group(out)
    assert len(groups) == 200 and all(len(s) == 1 for s in groups.values())
    # an explicit group wins over the image: two images of one group share a split
    pair = [Record(id="a", image="x.jpg", text="t", lang="en", group="G"),
            Record(id="b", image="y.jpg", text="t", lang="en", group="G")]
    for seed in range(20):
        s = assign_splits(pair, seed=seed)
        assert s[0].split == s[1].split


def test_ratios_are_approximately_respected():
    n = 600
    out = assign_splits(make_records(n), ratios="0.7,0.2,0.1", seed=0)
    per_split = Counter(next(iter(s)) for s in splits_by_group(out).values())
    for name, ratio in zip(("train", "val", "test"), (0.7, 0.2, 0.1)):
        assert abs(per_split[name] / n - ratio) < 0.05, per_split


def test_two_ratios_mean_no_test_split_and_weights_are_normalised():
    out = assign_splits(make_records(100), ratios="9,1", seed=0)
    assert {r.split for r in out} == {"train", "val"}
    assert parse_ratios("8,1,1") == pytest.approx((0.8, 0.1, 0.1))
    for bad in ("0.8,0.1,0.1,0.1", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(DataError, match="--ratios"):
            parse_ratios(bad)


def test_adding_rows_keeps_existing_assignments():
    old = assign_splits(make_records(200), seed=5)
    grown = assign_splits(make_records(200) + make_records(100, start=200), seed=5)
    assert [r.split for r in grown[: len(old)]] == [r.split for r in old]
    assert {r.split for r in grown[len(old):]} == {"train", "val", "test"}


def test_keep_existing_keeps_splits_and_new_rows_join_their_group():
    recs = make_records(50)
    for r in recs:
        if r.image == "img/0.jpg":
            r.split = "test" if r.lang == "en" else ""  # partly labelled group
        if r.image == "img/1.jpg":
            r.split = "val"
    out = assign_splits(recs, seed=0, keep_existing=True)
    groups = splits_by_group(out)
    assert groups["img/0.jpg"] == {"test"} and groups["img/1.jpg"] == {"val"}
    assert all(len(s) == 1 for s in groups.values())
    recs[0].split, recs[1].split = "train", "val"  # group img/0.jpg now straddles two splits
    with pytest.raises(DataError, match="img/0.jpg"):
        assign_splits(recs, keep_existing=True)


def test_split_counts_table():
    out = assign_splits(make_records(40), seed=0)
    rows = {r["lang"]: r for r in split_counts(out)}
    assert rows["en"]["total"] == 80 and rows["ha"]["total"] == 40
    assert rows["images"]["total"] == 40
    assert sum(rows["ha"][s] for s in ("train", "val", "test")) == 40
    assert rows["en"]["train"] == 2 * rows["ha"]["train"]  # captions of one image travel together


def test_cli_split_writes_manifest_and_reports_counts(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    write_manifest(src, make_records(120))
    out = tmp_path / "split.jsonl"
    assert main(["data", "split", str(src), "--out", str(out), "--seed", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    written = read_manifest(out)
    assert [r.split for r in written] == [r.split for r in assign_splits(read_manifest(src), seed=2)]
    by_lang = {row["lang"]: row for row in report["counts"]}
    assert by_lang["sw"]["train"] == sum(r.lang == "sw" and r.split == "train" for r in written)
    assert main(["data", "split", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| lang" in text and "Hausa" in text
