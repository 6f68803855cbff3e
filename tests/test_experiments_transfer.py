"""`lugha experiments transfer` end to end on the tiny real demo: the source x target matrix, the best
source chosen on the validation split, compared with English by paired statistics; the script/family table."""
from __future__ import annotations

import json

import pytest

from lugha.errors import ConfigError


def test_script_and_family_table():
    from lugha.training.exp_langinfo import LANG_INFO, closeness, lang_info

    from lugha.data.demo import DEFAULT_LANGS

    assert set(DEFAULT_LANGS) <= set(LANG_INFO)  # every demo language has its row
    assert lang_info("am") == {"lang": "am", "script": "Ethi", "family": "Afro-Asiatic", "branch": "Semitic"}
    assert lang_info("az-Arab")["script"] == "Arab" and lang_info("xx")["family"] == "unknown"
    assert closeness("am", "ti") == "same branch" and closeness("ha", "am") == "same family"
    assert closeness("en", "sw") == "same script" and closeness("hi", "ta") == "unrelated"


def test_bad_adapter_is_a_config_error():
    pytest.importorskip("torch")
    from lugha.training.exp_transfer import TransferExperiment

    with pytest.raises(ConfigError, match="--adapter"):
        TransferExperiment(manifest="m.jsonl", work_dir="w", adapter="full")


@pytest.mark.slow
def test_transfer_quick_on_tiny_demo(demo_small, tmp_path, capsys):
    pytest.importorskip("torch")
    import lugha.cli as cli

    out = tmp_path / "out"
    args = ["experiments", "transfer", "--data", str(demo_small), "--model", "test-tiny", "--quick", "--steps", "15",
            "--batch-size", "16", "--sources", "en,sw,am,ti", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    src, tgt, m = report["sources"], report["targets"], report["matrix"]
    assert src == ["en", "sw", "am", "ti"] and len(tgt) == 16 and "yo" in tgt
    assert len(m) == len(src) and all(len(row) == len(tgt) for row in m)  # sources x targets
    assert all(0.0 <= v <= 1.0 for row in m for v in row)
    assert report["protocol"]["selection_split"] == "val" and report["metric"] == "t2i_r1"
    sel = report["selection"]
    for r in report["targets_detail"]:
        t, best = r["target"], r["best_source"]
        assert best != t and best in src
        scores = {s: sel["scores"][s][t] for s in src if s != t}
        assert scores[best] == max(scores.values())  # best on the validation split, not on the test split
        assert r["english"] == m[src.index("en")][tgt.index(t)] and r["best"] == m[src.index(best)][tgt.index(t)]
        assert r["in_language"] == (m[src.index(t)][tgt.index(t)] if t in src else None)
        c = r["best_vs_english"]
        if t == "en":
            assert c["verdict"] == "the target is English"
        elif best == "en":
            assert c["verdict"] == "English is the best source"
        else:
            assert c["ci_low_points"] <= c["diff_points"] <= c["ci_high_points"] and c["p_holm"] >= c["p_value"]
            assert c["diff_points"] == pytest.approx(100 * (r["best"] - r["english"]))
    langs = report["languages"]
    assert langs["ti"]["script"] == "Ethi" and langs["yo"]["family"] == "Atlantic-Congo" and "Glottolog" in report["language_source"]
    s = report["summary"]
    assert s["targets"] == 16 and s["best_beats_english"] + s["best_worse_than_english"] + s["no_difference_shown"] \
        == sum("p_holm" in r["best_vs_english"] for r in report["targets_detail"])
    html = (out / "transfer.html").read_text()
    assert html.count("<svg") == 2 and ">Ethi<" in html and ">Atlantic-Congo<" in html
    # a rerun with the same --work reuses the trained sources and gives the same matrix
    assert cli.main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matrix"] == m
