"""The embedded demo dataset, built from the real sources (font, emoji-test.txt, CLDR JSON)."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from lugha.cli import main
from lugha.data import demo, read_manifest
from lugha.data import emoji_sources as src
from lugha.records import SPLITS
from lugha.errors import DataError, MissingDependencyError


def _sources_missing() -> str:
    try:
        src.find_font(), src.find_emoji_test(), src.find_cldr()
    except MissingDependencyError as e:
        return str(e)
    return ""


needs_sources = pytest.mark.skipif(bool(_sources_missing()), reason=_sources_missing() or "sources found")


def _raw_cldr(lang: str) -> dict:
    """The CLDR JSON as shipped, read without lugha's parser (the test's oracle)."""
    path = src.find_cldr() / "annotations" / lang / "annotations.json"
    return json.loads(path.read_text(encoding="utf-8"))["annotations"]["annotations"]


def _raw_groups() -> dict[str, tuple[str, str]]:
    """``{code points: (group, subgroup)}`` straight from emoji-test.txt."""
    out, group, sub = {}, "", ""
    for line in src.find_emoji_test().read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line[8:].strip()
        elif line.startswith("# subgroup:"):
            sub = line[11:].strip()
        elif "; fully-qualified" in line:
            out["-".join(c.lower() for c in line.split(";")[0].split())] = (group, sub)
    return out


@needs_sources
def test_manifest_rows_are_valid_and_cover_every_default_language(demo_small):
    rows = read_manifest(demo_small)  # parses every row against the Record schema
    assert len({r.id for r in rows}) == len(rows)
    assert {r.lang for r in rows} == set(demo.DEFAULT_LANGS)
    for r in rows:
        assert r.id == f"{r.group}-{r.lang}"
        assert r.image == f"images/{r.group}.png"
        assert r.text.strip() and r.label and r.subgroup and r.split in SPLITS
        assert r.meta["emoji"] and "1f3fb" not in r.group  # no skin-tone variants
    per_lang = defaultdict(int)
    for r in rows:
        per_lang[r.lang] += 1
    assert per_lang["en"] == 48  # --limit is a number of emoji, each captioned in every language


@needs_sources
def test_every_image_exists_is_rgb_of_the_size_and_not_blank(demo_small):
    rows = read_manifest(demo_small)
    for image in sorted({r.image for r in rows}):
        with Image.open(demo_small.parent / image) as im:
            assert im.mode == "RGB" and im.size == (64, 64), image
            arr = np.asarray(im)
        non_white = (arr < 240).any(axis=-1).mean()
        assert non_white > 0.02 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 8, f"{image} looks blank"


@needs_sources
def test_no_emoji_is_in_two_splits(demo_small):
    rows = read_manifest(demo_small)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r.image].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {r.split for r in rows} == set(SPLITS)  # 48 emoji at 80/10/10 fill all three


@needs_sources
def test_text_is_the_cldr_name_and_label_the_unicode_group(demo_small):
    rows = read_manifest(demo_small)
    groups = _raw_groups()
    by_id = {r.id: r for r in rows}
    # One known emoji: the first of emoji-test.txt is always in an evenly spread subset.
    assert by_id["1f600-en"].text == "grinning face" == _raw_cldr("en")["😀"]["tts"][0]
    assert by_id["1f600-en"].label == "Smileys & Emotion"
    for lang in ("en", "ha", "am", "wo"):
        raw = _raw_cldr(lang)
        for r in (r for r in rows if r.lang == lang):
            entry = raw[r.meta["emoji"].replace("\ufe0f", "")]
            assert r.text == entry["tts"][0].strip()
            assert set(r.keywords) <= {k.strip() for k in entry.get("default", [])}
            assert (r.label, r.subgroup) == groups[r.group]
    assert by_id["1f600-ha"].text != by_id["1f600-en"].text  # a real translation, not an English fallback


def test_split_is_a_stable_80_10_10_hash():
    keys = [f"{i:x}" for i in range(20000)]
    seed0 = [demo.split_of(k, 0) for k in keys]
    assert seed0 == [demo.split_of(k, 0) for k in keys]
    fractions = {s: seed0.count(s) / len(keys) for s in SPLITS}
    assert abs(fractions["train"] - 0.8) < 0.015 and abs(fractions["val"] - 0.1) < 0.01
    assert sum(a != b for a, b in zip(seed0, (demo.split_of(k, 1) for k in keys))) > 0.2 * len(keys)


@needs_sources
def test_build_is_deterministic_and_rerun_reuses_images(tmp_path):
    kw = dict(langs="en,wo", limit=12, image_size=32, seed=3)
    a, b = demo.build_demo(tmp_path / "a", **kw), demo.build_demo(tmp_path / "b", **kw)
    assert a["images"]["rendered"] == 12 and a["languages"] == b["languages"]
    manifest_a = (tmp_path / "a" / "manifest.jsonl").read_bytes()
    assert manifest_a == (tmp_path / "b" / "manifest.jsonl").read_bytes()
    for png in (tmp_path / "a" / "images").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / "images" / png.name).read_bytes()
    again = demo.build_demo(tmp_path / "a", **kw)
    assert again["images"] == {"rendered": 0, "reused": 12, "skipped": []}
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == manifest_a
    bigger = demo.build_demo(tmp_path / "a", **{**kw, "image_size": 40})  # another size re-renders
    assert bigger["images"]["rendered"] == 12
    with Image.open(next((tmp_path / "a" / "images").glob("*.png"))) as im:
        assert im.size == (40, 40)
    assert {p.name for p in (tmp_path / "a" / "LICENSES").iterdir()} >= {"Unicode-3.0.txt", "OFL-1.1.txt"}


def test_missing_font_names_the_install_step(tmp_path, monkeypatch):
    with pytest.raises(MissingDependencyError, match="apt-get install fonts-noto-color-emoji"):
        demo.build_demo(tmp_path, font=tmp_path / "NotoColorEmoji.ttf")
    monkeypatch.delenv("LUGHA_EMOJI_FONT", raising=False)
    monkeypatch.setenv("LUGHA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(src, "FONT_PATHS", (str(tmp_path / "nowhere.ttf"),))
    with pytest.raises(MissingDependencyError, match="fetch_demo_sources.sh") as e:
        src.find_font()
    assert "nowhere.ttf" in str(e.value)  # says where it looked


def test_missing_emoji_test_names_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setenv("LUGHA_EMOJI_TEST", str(tmp_path / "emoji-test.txt"))
    with pytest.raises(MissingDependencyError, match="apt-get install unicode-data.*"):
        src.find_emoji_test()


def test_missing_cldr_names_the_install_step(tmp_path, monkeypatch):
    with pytest.raises(MissingDependencyError, match="fetch_demo_sources.sh.*cldr-annotations-full@48.2.0"):
        src.find_cldr(tmp_path)
    monkeypatch.delenv("LUGHA_CLDR_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LUGHA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(src, "_REPO", tmp_path / "repo")
    with pytest.raises(MissingDependencyError, match="LUGHA_CLDR_DIR") as e:
        src.find_cldr()
    assert str(tmp_path / ".cache" / "node" / "node_modules" / "cldr-annotations-full") in str(e.value)


@needs_sources
def test_cldr_search_order_accepts_env_and_cwd_cache(tmp_path, monkeypatch):
    real = src.find_cldr()
    monkeypatch.setenv("LUGHA_CLDR_DIR", str(real.parent))  # a node_modules folder is enough
    assert src.find_cldr() == real
    monkeypatch.setenv("LUGHA_CLDR_DIR", str(tmp_path))  # set but wrong: an error, not a fallback
    with pytest.raises(MissingDependencyError, match="LUGHA_CLDR_DIR"):
        src.find_cldr()
    monkeypatch.delenv("LUGHA_CLDR_DIR")
    cache = tmp_path / ".cache" / "node" / "node_modules"
    cache.mkdir(parents=True)
    (cache / "cldr-annotations-full").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    assert src.find_cldr() == cache / "cldr-annotations-full"


@needs_sources
def test_unknown_language_is_named(tmp_path):
    with pytest.raises(DataError, match="'xx-nope'.*available: .*wo"):
        demo.build_demo(tmp_path, langs="en,xx-nope", limit=2, image_size=16)


@needs_sources
def test_cli_json_reports_counts_per_language_and_split(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["data", "demo", "--out", str(out), "--langs", "en,sw", "--limit", "10",
                 "--image-size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_manifest(out / "manifest.jsonl")
    assert list(summary["languages"]) == ["en", "sw"]
    for lang, counts in summary["languages"].items():
        assert counts["total"] == sum(r.lang == lang for r in rows)
        assert counts["total"] == sum(counts[s] for s in SPLITS)
    assert summary["pairs"] == len(rows) and summary["emoji"] == 10
    assert sum(v["emoji"] for v in summary["splits"].values()) == 10


@needs_sources
def test_cli_prints_a_table(tmp_path, capsys):
    assert main(["data", "demo", "--out", str(tmp_path), "--langs", "yo,ta", "--limit", "5",
                 "--image-size", "16"]) == 0
    text = capsys.readouterr().out
    assert "| yo " in text and "| ta " in text and "| all " in text and "5 emoji images" in text


@needs_sources
@pytest.mark.slow
def test_full_default_build_has_13_languages_with_1500_pairs(tmp_path):
    start = time.monotonic()
    summary = demo.build_demo(tmp_path / "demo")
    totals = {lang: c["total"] for lang, c in summary["languages"].items()}
    assert set(demo.NAMED_LANGS) <= set(totals) and all(totals[lang] > 1000 for lang in demo.NAMED_LANGS)
    assert sum(n >= 1500 for n in totals.values()) >= 13, totals
    assert summary["images"]["rendered"] == summary["emoji"] >= 1500
    print(f"full demo build: {summary['pairs']} pairs, {totals} in {time.monotonic() - start:.1f}s")
