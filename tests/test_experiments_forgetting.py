"""`lugha experiments forgetting` end to end on the tiny real demo: the LoRA grid, retention against the
English source, reach against the reference trained on all the target data, and the paired cells."""
from __future__ import annotations

import json

import pytest

from lugha.errors import ConfigError


def test_grid_parsing():
    from lugha.training.exp_forgetting import DEFAULT_GRID, parse_grid

    g = parse_grid("rank=2,8; steps=5")
    assert g["rank"] == (2, 8) and g["steps"] == (5,) and g["lr"] == DEFAULT_GRID["lr"]
    assert parse_grid("lr=1e-4")["lr"] == (1e-4,)
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid("depth=3")
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid("rank=2.5")
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid("steps=0")


@pytest.mark.slow
def test_forgetting_quick_on_tiny_demo(demo_small, tmp_path, capsys):
    pytest.importorskip("torch")
    import lugha.cli as cli

    out = tmp_path / "out"
    rc = cli.main(["experiments", "forgetting", "--data", str(demo_small), "--model", "test-tiny", "--quick",
                   "--targets", "sw,yo,am", "--grid", "rank=2,4;lr=1e-3;steps=3,6", "--source-steps", "15",
                   "--reference-max-steps", "8", "--batch-size", "16", "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    p, src, ref, rows = report["protocol"], report["source_scores"], report["reference"], report["settings"]
    assert p["targets"] == ["sw", "yo", "am"] and p["source"] == "en" and p["keep"] == 0.95 and p["reach"] == 0.8
    assert [(r["rank"], r["steps"]) for r in rows] == [(2, 3), (2, 6), (4, 3), (4, 6)] and len({r["name"] for r in rows}) == 4
    assert ref["rank"] == 4 and ref["steps"] <= 8 and ref["epochs_seen"] > 0
    for r in rows:
        # retention is against the English source, reach against the reference: the thresholds' two arms
        assert r["retention_pct"] == pytest.approx(100 * r["english"] / src["english"])
        assert r["reached_pct"] == pytest.approx(100 * r["targets_pooled"] / ref["targets_pooled"])
        kept, reached = r["kept_cell"], r["reached_cell"]
        assert kept["margin_points"] == pytest.approx(100 * 0.05 * src["english"])
        assert reached["margin_points"] == pytest.approx(100 * 0.20 * ref["targets_pooled"])
        assert kept["reference_hits"] == round(src["english"] * kept["n"])
        assert reached["reference_hits"] == round(ref["targets_pooled"] * reached["n"])
        # the targets' captions of one image are one cluster: fewer clusters than pooled items, Tango's sizes off
        assert 0 < reached["clusters"] < reached["n"] and reached["detectable_points"] is None
        assert reached["ci_low_points"] <= reached["drop_points"] <= reached["ci_high_points"]
        assert kept["p_holm"] >= kept["p_value"] and {kept["decision"], reached["decision"]} <= {"pass", "undecided", "fail"}
        assert r["meets_both_point"] == (r["retention_pct"] >= 95 and r["reached_pct"] >= 80)
        assert r["meets_both_shown"] == (kept["decision"] == reached["decision"] == "pass")
        g = r["gain"]
        assert g["ci_low_points"] <= g["diff_points"] <= g["ci_high_points"]
        assert g["diff_points"] == pytest.approx(100 * (r["targets_pooled"] - src["targets_pooled"]))
    assert report["summary"]["meet_both_point"] == [r["name"] for r in rows if r["meets_both_point"]]
    html = (out / "forgetting.html").read_text()
    assert html.count("<svg") == 2 and "retention vs reached" in html and rows[0]["name"] in html
