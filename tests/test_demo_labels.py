"""The demo's labels in the local language: labels.json written by `lugha data demo` from CLDR's names of the
emoji groups, read by load_label_names, and turned into label packs named in each language by export."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lugha.data import group_names as gn
from lugha.data import read_manifest
from lugha.data.demo import DEFAULT_LANGS, LABEL_NAMES_FILE

from test_demo_data import needs_sources


@needs_sources
def test_demo_writes_label_names_in_each_language(demo_small):
    from lugha.training.evaluate import load_label_names

    path = demo_small.parent / LABEL_NAMES_FILE
    names = json.loads(path.read_text(encoding="utf-8"))
    assert load_label_names(demo_small)[0] == names
    groups: dict[str, set[str]] = {}
    for r in read_manifest(demo_small):
        groups.setdefault(r.lang, set()).add(r.label)
    assert set(groups) == set(DEFAULT_LANGS)
    for lang, labels in groups.items():
        local = names.get(lang, {})
        assert set(local) <= labels  # names only for groups the data has
        for label in labels:  # what a label pack will show: the CLDR name, else the English group name
            shown = local.get(label, label)
            assert shown == gn.GROUP_NAMES.get(lang, {}).get(label, label)
        if lang not in ("en", "wo"):  # CLDR 48 names no emoji group in Wolof; English names are the labels
            assert local, f"{lang}: no local label names"
            assert len(set(local.values())) == len(local), f"{lang}: two groups share a name"
    assert "en" not in names and "wo" not in names
    assert names["sw"]["Animals & Nature"] == "wanyama au ulimwengu" and names["ha"]["Objects"] == "abu"
    # every demo language but Wolof has a local name for most groups
    assert sum(len(names.get(lang, {})) >= 6 for lang in DEFAULT_LANGS) >= 14


def test_table_is_complete_and_only_translations():
    for lang in DEFAULT_LANGS:
        if lang == "en":
            continue
        assert lang in gn.GROUP_NAMES, f"{lang} missing from GROUP_NAMES"
        for group, name in gn.GROUP_NAMES[lang].items():
            assert group in gn.GROUP_KEYS and name.strip() == name and name.lower() != group.lower()
    assert gn.group_names("en") == {} and gn.group_names("sw") == gn.GROUP_NAMES["sw"]


@pytest.mark.skipif(gn.find_cldr_misc() is None,
                    reason="cldr-misc-full not installed (npm install --prefix .cache/node cldr-misc-full@48.2.0, "
                           "or set LUGHA_CLDR_MISC_DIR)")
def test_table_matches_cldr_misc_full():
    main = gn.find_cldr_misc()
    version = json.loads((main.parent / "package.json").read_text())["version"]
    if version != "48.2.0":
        pytest.skip(f"cldr-misc-full {version}: the table is from 48.2.0")
    for lang in DEFAULT_LANGS:
        expected = {} if lang == "en" else gn.read_character_labels(main, lang)
        assert gn.GROUP_NAMES.get(lang, {}) == expected, lang
    fr = gn.group_names("fr", main)  # a locale outside the table comes from the package
    assert fr and all(g in gn.GROUP_KEYS for g in fr)


@pytest.mark.slow
@needs_sources
def test_export_label_packs_are_in_the_local_language(demo_small, tmp_path):
    """export's _label_packs on the demo (its labels.json) with an untrained test-tiny model."""
    from lugha.export.pipeline import _label_packs
    from lugha.export.source import token_encoder, untrained_source
    from lugha.training.evaluate import load_label_names

    source = untrained_source("test-tiny", demo_small, ("en", "sw", "ha"))
    data = SimpleNamespace(pairs=SimpleNamespace(languages=("en", "sw", "ha")),
                           label_names=load_label_names(demo_small)[0], encode_tokens=token_encoder(source.tokenizer))
    packs = _label_packs(source, data, tmp_path)
    shown = {}
    for lang, rel in packs.items():
        with np.load(tmp_path / rel) as z:
            shown[lang] = [str(x) for x in z["labels"]]
            assert z["embeds"].shape[0] == len(shown[lang])
    assert "Animals & Nature" in shown["en"]
    assert "wanyama au ulimwengu" in shown["sw"] and "Animals & Nature" not in shown["sw"]
    assert "dabba ko ɗabiʼa" in shown["ha"] and not set(shown["ha"]) & set(shown["en"])
