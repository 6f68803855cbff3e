"""`lugha feedback plan`: every item judged by >= 3 different testers, balanced over languages and labels,
testers' loads within one item, language pools respected; the CSV a coordinator prints; the CLI."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest

from lugha.data.study_plan import CSV_FIELDS, make_plan, parse_testers, plan_csv
from lugha.errors import ConfigError, DataError
from lugha.records import Record, write_manifest

LANGS = ("en", "sw", "yo")
LABELS = ("animals", "food", "people", "places")


@pytest.fixture
def manifest(tmp_path):
    """3 languages x 4 labels x 10 images, all in the test split (no image files: hashes are then None)."""
    records = [Record(id=f"{label}{i}-{lang}", image=f"images/{label}{i}.png", text=f"{label} {i} in {lang}",
                      lang=lang, split="test", label=label, group=f"{label}{i}")
               for lang in LANGS for label in LABELS for i in range(10)]
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, records)
    return path


def spread(counter: Counter) -> int:
    return max(counter.values()) - min(counter.values())


@pytest.mark.parametrize("testers,items,judges", [("5", 60, 3), ("7", 50, 3), ("4", 30, 4), ("9", 61, 5)])
def test_every_item_gets_its_judges_and_the_work_is_even(manifest, testers, items, judges):
    plan = make_plan(manifest, testers, items, judges=judges, seed=3)
    cov = plan["coverage"]
    assert cov["items"] == items and cov["min_judges"] == cov["max_judges"] == judges
    for item in plan["items"]:
        assert len(set(item["testers"])) == judges  # different people, not one person twice
    seen = Counter(key for t in plan["testers"] for key in t["items"])
    assert all(seen[i["item"]] == judges for i in plan["items"]) and len(seen) == items
    loads = Counter({t["tester"]: len(t["items"]) for t in plan["testers"]})
    assert len(loads) == int(testers) and spread(loads) <= 1 and sum(loads.values()) == items * judges
    # languages within one item of each other, and labels within one inside each language
    assert spread(Counter(i["lang"] for i in plan["items"])) <= 1
    for lang in LANGS:
        assert spread(Counter(i["label"] for i in plan["items"] if i["lang"] == lang)) <= 1


def test_each_tester_sees_a_mix_of_languages_in_a_shuffled_order(manifest):
    plan = make_plan(manifest, "5", 60, seed=0)
    items = {i["item"]: i for i in plan["items"]}
    for t in plan["testers"]:
        per_lang = Counter(items[k]["lang"] for k in t["items"])
        assert set(per_lang) == set(LANGS) and spread(per_lang) <= 2
        assert t["items"] != sorted(t["items"])  # not in plan order: order effects do not follow languages


def test_language_pools_judge_only_their_own_language(manifest):
    plan = make_plan(manifest, "sw=3,yo=4", 20, seed=1)
    assert {i["lang"] for i in plan["items"]} == {"sw", "yo"}
    items = {i["item"]: i for i in plan["items"]}
    for t in plan["testers"]:
        assert t["tester_lang"] in ("sw", "yo")
        assert {items[k]["lang"] for k in t["items"]} == {t["tester_lang"]}
    assert plan["coverage"]["min_judges"] == 3 and plan["coverage"]["items_per_lang"] == {"sw": 10, "yo": 10}


def test_plans_are_reproducible_and_the_seed_matters(manifest):
    a, b, c = (make_plan(manifest, "5", 30, seed=s) for s in (7, 7, 8))
    assert a == b and a["items"] != c["items"]


def test_impossible_plans_say_why(manifest):
    with pytest.raises(ConfigError, match="pool '\\*' has 2 tester"):
        make_plan(manifest, "2", 10)
    with pytest.raises(ConfigError, match="pool 'sw' has 2 tester"):
        make_plan(manifest, "sw=2,yo=3", 10)
    with pytest.raises(DataError, match="120 usable records, the plan asks for 500"):
        make_plan(manifest, "5", 500)
    with pytest.raises(DataError, match="no records in split 'val'"):
        make_plan(manifest, "5", 10, split="val")
    with pytest.raises(ConfigError, match="language=count"):
        parse_testers("sw:3")
    assert parse_testers("5") == {"*": 5} and parse_testers("sw=3, yo=2") == {"sw": 3, "yo": 2}


def test_csv_has_one_row_per_assignment_in_each_testers_order(manifest):
    plan = make_plan(manifest, "5", 60, seed=2)
    rows = list(csv.DictReader(io.StringIO(plan_csv(plan))))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 180
    t1 = [r["item"] for r in rows if r["tester"] == plan["testers"][0]["tester"]]
    assert t1 == plan["testers"][0]["items"]
    assert [int(r["order"]) for r in rows if r["tester"] == "T01"] == list(range(1, len(t1) + 1))


def test_plan_on_the_demo_names_the_hash_the_field_app_stores(demo_small):
    from lugha.hashing import sha256_file

    plan = make_plan(demo_small, "5", 60, split="")
    assert plan["coverage"]["min_judges"] == 3 and len(plan["coverage"]["items_per_lang"]) >= 10
    for item in plan["items"][:5]:
        assert item["image_sha256"] == sha256_file(item["image"])


def test_cli_writes_json_and_csv(demo_small, tmp_path, capsys):
    from lugha.cli import main

    rc = main(["feedback", "plan", "--testers", "5", "--items", "60", "--manifest", str(demo_small), "--split", "",
               "--out", str(tmp_path / "plan.json"), "--csv", str(tmp_path / "plan.csv")])
    out = capsys.readouterr().out
    assert rc == 0 and "60 items, each judged by 3-3 testers (180 judgments)" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["schema"] == "lugha.study_plan/1" and len(plan["testers"]) == 5
    assert len((tmp_path / "plan.csv").read_text().splitlines()) == 181
    assert main(["feedback", "plan", "--testers", "5", "--items", "12", "--manifest", str(demo_small),
                 "--split", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coverage"]["assignments"] == 36
