"""`lugha experiments fusion` on a tiny real demo dataset with the tiny twin: one row per head, parity, memory."""
from __future__ import annotations

import json

import pytest

from lugha.errors import ConfigError


@pytest.fixture
def main(monkeypatch):
    import lugha.cli as cli

    return cli.main


def test_help_teaches_the_protocol(main, capsys):
    with pytest.raises(SystemExit):
        main(["experiments", "fusion", "--help"])
    out = capsys.readouterr().out
    assert "lugha experiments fusion --data" in out and "cross-lingual" in out and "--budget-steps" in out


def test_bad_head_names_are_config_errors():
    pytest.importorskip("torch")
    from lugha.export.fusion_experiment import FusionExperiment

    with pytest.raises(ConfigError, match="--heads"):
        FusionExperiment(manifest="m.jsonl", heads=("early", "mid"))
    with pytest.raises(ConfigError, match="--steps"):
        FusionExperiment(manifest="m.jsonl", steps=0)


@pytest.mark.slow
def test_fusion_experiment_compares_every_head_on_one_budget(main, demo_small, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from lugha.training.fusion import HEAD_KINDS
    from lugha.export.fusion_experiment import format_report

    rc = main(["experiments", "fusion", "--data", str(demo_small), "--model", "test-tiny", "--budget-steps", "20",
               "--batch-size", "16", "--proj-epochs", "1", "--repeats", "5", "--train-langs", "en,sw",
               "--cache-dir", str(tmp_path / "cache"), "--work", str(tmp_path / "work"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    p = report["protocol"]
    assert p["seen_langs"] == ["en", "sw"] and "yo" in p["heldout_langs"] and p["steps"] == 20
    assert [r["head"] for r in report["heads"]] == list(HEAD_KINDS)
    for r in report["heads"]:
        assert r["params"] > 0 and r["parity_ok"] and r["parity_argmax_agree"] == 1.0
        assert r["onnx_ms"] > 0 and r["onnx_kb"] > 0 and r["peak_train_mb"] >= 0 and r["ms_per_step"] > 0
        for key in ("acc", "acc_seen", "acc_heldout", "acc_image_only", "acc_text_only"):
            assert 0.0 <= r[key] <= 1.0
        assert set(report["per_language"][r["head"]]) == set(p["seen_langs"]) | set(p["heldout_langs"])
    params = {r["head"]: r["params"] for r in report["heads"]}
    assert params["prototype"] < params["late"] < params["early"]  # the survey's size order, on tiny sizes too
    assert (tmp_path / "work" / "xattn.onnx").is_file()
    table = format_report(report)
    assert table.count("\n| ") >= 4 + 16 and "en*" in table and "held-out" in table
