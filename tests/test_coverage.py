"""Tokenizer coverage (exact values on a hand-built tokenizer) and script detection."""
from __future__ import annotations

import json
import unicodedata

import pytest

from lugha.cli import main
from lugha.data.coverage import coverage_report, resolve_tokenizer
from lugha.records import Record, write_manifest
from lugha.data.scripts import detect_script, script_counts
from lugha.errors import DataError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "dog", "run", "##ning", "##s", ".", "a", "ƙasa"]
ID = {t: i for i, t in enumerate(VOCAB)}

# Hand-tokenised (WordPiece, punctuation split off, whole unknown words -> [UNK]):
#   en "the dog runs."  -> the dog run ##s .     5 tokens, 3 words, 0 unk, 7 with [CLS]/[SEP]
#   en "a dog running"  -> a dog run ##ning      4 tokens, 3 words, 0 unk, 6 with specials
#   ha "ɗan ƙasa"       -> [UNK] ƙasa            2 tokens, 2 words, 1 unk, 4
#   ha "ƙasa."          -> ƙasa .                2 tokens, 1 word,  0 unk, 4
#   am "ሰላም ልጁ"        -> [UNK] [UNK]           2 tokens, 2 words, 2 unk, 4
TEXTS = [("en", "the dog runs."), ("en", "a dog running"), ("ha", "ɗan ƙasa"), ("ha", "ƙasa."), ("am", "ሰላም ልጁ")]
MAX_LENGTH = 6  # only "the dog runs." (7 with specials) is cut


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece(ID, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ID["[CLS]"]), ("[SEP]", ID["[SEP]"])])
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # the report must not count pads
    return tok


def records():
    return [Record(id=f"r{i}", image="x.png", text=t, lang=lang) for i, (lang, t) in enumerate(TEXTS)]


def test_exact_values_per_language_and_script():
    tok = make_tokenizer()
    rep = coverage_report(records(), tok, max_length=MAX_LENGTH)
    lang = {r["lang"]: r for r in rep["by_lang"]}
    expect_en = {"rows": 2, "words": 6, "tokens": 9, "unk": 0, "unk_rate": 0.0, "fertility": 1.5,
                 "truncated": 1, "truncated_share": 0.5, "vocab": 7, "script": "Latin"}
    assert {k: lang["en"][k] for k in expect_en} == expect_en
    assert (lang["ha"]["tokens"], lang["ha"]["unk"], lang["ha"]["words"]) == (4, 1, 3)
    assert lang["ha"]["unk_rate"] == pytest.approx(0.25) and lang["ha"]["fertility"] == pytest.approx(4 / 3)
    assert (lang["ha"]["truncated"], lang["ha"]["vocab"], lang["ha"]["script"]) == (0, 3, "Latin+diacritics")
    assert (lang["am"]["unk_rate"], lang["am"]["fertility"], lang["am"]["script"]) == (1.0, 1.0, "Ethiopic")
    assert lang["ha"]["unk_top"] == {"ɗan": 1} and lang["am"]["unk_top"] == {"ሰላም": 1, "ልጁ": 1}
    assert lang["ha"]["script_rows"] == {"Latin+diacritics": 2}
    scripts = {r["script"]: r for r in rep["by_script"]}
    assert set(scripts) == {"Latin", "Latin+diacritics", "Ethiopic"} and scripts["Latin+diacritics"]["langs"] == "ha"
    o = rep["overall"]
    assert (o["rows"], o["tokens"], o["words"], o["unk"], o["truncated"]) == (5, 15, 11, 3, 1)
    assert o["unk_rate"] == pytest.approx(3 / 15) and o["fertility"] == pytest.approx(15 / 11)
    # every id the model is fed, plus all specials; "ɗan" and "ሰላም" map to [UNK] (1)
    assert rep["vocab_ids"] == sorted(set(range(len(VOCAB))))
    assert rep["unk_id"] == 1 and rep["specials"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    assert tok.padding and tok.padding["pad_id"] == 0  # the caller's settings are restored


def test_prefix_counts_for_truncation_only():
    rep = coverage_report(records(), make_tokenizer(), max_length=MAX_LENGTH, prefix="a ")
    o = rep["overall"]
    assert (o["tokens"], o["unk"]) == (15, 3)  # measured on the text alone
    assert o["truncated"] == 2  # "a the dog runs." 8 and "a a dog running" 7 exceed 6 now


def test_cli_json_table_and_vocab_out(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, records())
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    make_tokenizer().save(str(tok_dir / "tokenizer.json"))
    vocab = tmp_path / "vocab.json"
    argv = ["data", "coverage", str(manifest), "--tokenizer", str(tok_dir), "--max-length", "6"]
    assert main(argv + ["--json", "--vocab-out", str(vocab)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["overall"]["unk"] == 3 and rep["max_length"] == 6 and rep["vocab_used"] == len(VOCAB)
    written = json.loads(vocab.read_text())
    assert written["ids"] == list(range(len(VOCAB))) and written["specials"]["[CLS]"] == 2
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| lang" in out and "| Ethiopic" in out and "| all" in out and "ɗan×1" in out


def test_config_name_without_weights_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUGHA_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="lugha weights e5-small"):
        resolve_tokenizer("lowclip-lite0-e5small")
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, records())
    assert main(["data", "coverage", str(manifest), "--tokenizer", "lowclip-lite0-e5small"]) == 1
    assert "lugha weights e5-small" in capsys.readouterr().err
    with pytest.raises(DataError, match="not a file, a folder or a model config"):
        resolve_tokenizer("no-such-thing")


def test_config_name_resolves_to_materialised_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LUGHA_HOME", str(tmp_path))
    folder = tmp_path / "weights" / "e5-small"
    folder.mkdir(parents=True)
    make_tokenizer().save(str(folder / "tokenizer.json"))
    path, max_length, prefix = resolve_tokenizer("lowclip-lite0-e5small")
    assert (path, max_length, prefix) == (folder / "tokenizer.json", 64, "passage: ")


@pytest.mark.parametrize("text, script", [
    ("ልጁ ከሰማያዊ ኩባያ ውሃ እየጠጣ ነው።", "Ethiopic"),
    ("बच्चा नीले कप से पानी पी रहा है।", "Devanagari"),
    ("শিশুটি নীল কাপ থেকে পানি পান করছে।", "Bengali"),
    ("நாய் வயலில் ஓடுகிறது.", "Tamil"),
    ("Ɗan kasuwa yana sayar da ƙwai.", "Latin+diacritics"),
    ("Ruwan sama ya ɓata hanya", "Latin+diacritics"),
    ("Ajá ń sáré nínú oko.", "Latin+diacritics"),
    (unicodedata.normalize("NFD", "Ajá ń sáré"), "Latin+diacritics"),  # combining marks, no precomposed letters
    ("Mbwa anakimbia shambani.", "Latin"),
    ("يَا رَبِّ كَيْ مُ سَمُ لَفِيَ", "Arabic"),  # Hausa in Ajami
    ("Собака бежит", "Cyrillic"),
    ("狗在跑", "Han"),
    ("12 😀 !", "Common"),
])
def test_detect_script(text, script):
    assert detect_script(text) == script


def test_script_counts_mixed_text():
    counts = script_counts("dog ውሻ é")
    assert counts == {"Latin": 3, "Ethiopic": 2, "Latin+diacritics": 1}
    assert detect_script("dog ውሻ é") == "Latin+diacritics"  # Latin letters (4) outnumber Ethiopic (2)
    assert detect_script("a ውሻው ነው") == "Ethiopic"
