"""Language code normalisation: the table, subtag casing, and the error that lists every bad row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lugha.errors import DataError
from lugha.langcodes import (
    KNOWN_LANGS, LUGHA_LANGS, XM3600_LANGS, LangNormalizer, UnknownLanguageError, language_name, normalize_lang,
    normalize_langs,
)


@pytest.mark.parametrize("code, tag", [
    ("hau", "ha"), ("yor", "yo"), ("ibo", "ig"), ("swa", "sw"), ("swh", "sw"), ("amh", "am"), ("som", "so"),
    ("zul", "zu"), ("wol", "wo"), ("hin", "hi"), ("ben", "bn"), ("tam", "ta"), ("aze", "az"), ("azj", "az"),
    ("eng", "en"), ("HA", "ha"), (" yo ", "yo"),
    # 639-2/B forms and deprecated tags in common use
    ("ger", "de"), ("fre", "fr"), ("chi", "zh"), ("cze", "cs"), ("dut", "nl"), ("per", "fa"), ("iw", "he"),
    ("in", "id"), ("mao", "mi"),
    # languages with no 639-1 code stay 639-3
    ("fil", "fil"), ("quz", "quz"), ("pcm", "pcm"),
    # region / script / variant subtags kept and case-fixed
    ("pt-br", "pt-BR"), ("az-latn", "az-Latn"), ("ha_NG", "ha-NG"), ("ZH-hant-tw", "zh-Hant-TW"),
    ("es-419", "es-419"), ("hau-ng", "ha-NG"), ("de-1996", "de-1996"), ("zh-yue", "yue"), ("en-x-Field", "en-x-field"),
])
def test_normalize_lang_table(code, tag):
    assert normalize_lang(code) == tag


def test_every_alias_is_idempotent_and_named():
    for tag in KNOWN_LANGS:
        assert normalize_lang(tag) == tag
        assert language_name(tag) and language_name(tag) != tag
    assert set(XM3600_LANGS) <= set(KNOWN_LANGS) and len(XM3600_LANGS) == 36
    assert set(LUGHA_LANGS) <= set(KNOWN_LANGS)


def test_language_names_for_reports():
    assert language_name("hau") == "Hausa"
    assert language_name("pt_br") == "Portuguese (BR)"
    assert language_name("az-latn") == "Azerbaijani (Latin)"
    assert language_name("en-x-foo") == "English"


@pytest.mark.parametrize("code", ["xx", "", "english", "en-!!", "en-a", "en-abc", "zz-Latn", "e n"])
def test_unknown_or_malformed_codes_are_errors(code):
    with pytest.raises(UnknownLanguageError) as e:
        normalize_lang(code, "file.csv:7")
    assert isinstance(e.value, DataError)
    assert "file.csv:7" in str(e.value) and repr(code) in str(e.value)


def test_a_name_where_a_code_belongs_gets_a_hint_not_a_guess():
    with pytest.raises(UnknownLanguageError, match=r"did you mean 'ha' = Hausa"):
        normalize_lang("Hausa")


def test_normalizer_collects_every_bad_row_and_counts_the_rest():
    norm = LangNormalizer()
    codes = ["en", "xx", "hau", "Yoruba"] + ["qq"] * 9
    out = [norm(c, f"t.csv:{i + 2}") for i, c in enumerate(codes)]
    assert out[0] == "en" and out[2] == "ha" and out[1] is None and out[3] is None
    with pytest.raises(UnknownLanguageError) as e:
        norm.check()
    err = e.value
    assert err.rows == [("t.csv:3", "xx"), ("t.csv:5", "Yoruba")] + [(f"t.csv:{i}", "qq") for i in range(6, 15)]
    msg = str(err)
    assert "in 11 row(s)" in msg and "'xx' at t.csv:3" in msg and "did you mean 'yo'" in msg
    shown = UnknownLanguageError.MAX_ROWS_PER_CODE
    assert f"t.csv:{6 + shown - 1}" in msg and f"t.csv:{6 + shown}," not in msg
    assert f"and {9 - shown} more" in msg


def test_normalize_langs_reports_all_bad_items_together():
    assert normalize_langs(["hau", "swh", "pt_br"]) == ["ha", "sw", "pt-BR"]
    with pytest.raises(UnknownLanguageError) as e:
        normalize_langs(["hau", "xx", "yy"])
    assert [code for _, code in e.value.rows] == ["xx", "yy"]


ISO_639_3 = Path("/usr/share/iso-codes/json/iso_639-3.json")


@pytest.mark.skipif(not ISO_639_3.exists(), reason="Debian iso-codes not installed")
def test_table_agrees_with_iso_639_3():
    """Every code that ISO gives a 639-1 form maps to that form; every other 639-3 tag stays itself."""
    iso = {e["alpha_3"]: e for e in json.loads(ISO_639_3.read_text())["639-3"]}
    for tag in KNOWN_LANGS:
        if len(tag) == 3:
            assert tag in iso and "alpha_2" not in iso[tag], tag
    two_letter = {e["alpha_2"]: a3 for a3, e in iso.items() if "alpha_2" in e}
    for tag in (t for t in KNOWN_LANGS if len(t) == 2):
        assert normalize_lang(two_letter[tag]) == tag
