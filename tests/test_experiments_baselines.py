"""`lugha experiments baselines` end to end on the tiny real demo with the tiny twin: the learning curve,
the two arms, and paired gains that agree with the arms they compare."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lugha.errors import ConfigError


def test_help_teaches_the_protocol(capsys):
    import lugha.cli as cli

    with pytest.raises(SystemExit):
        cli.main(["experiments", "baselines", "--help"])
    out = capsys.readouterr().out
    assert "lugha experiments baselines --data" in out and "--sizes" in out and "Holm" in out and "--quick" in out


def test_bad_sizes_and_heads_are_config_errors():
    pytest.importorskip("torch")
    from lugha.training.exp_baselines import BaselinesExperiment

    with pytest.raises(ConfigError, match="--sizes"):
        BaselinesExperiment(manifest="m.jsonl", sizes=(0, 10))
    with pytest.raises(ConfigError, match="--head"):
        BaselinesExperiment(manifest="m.jsonl", head="xattn")


def test_text_arm_never_sees_the_image():
    pytest.importorskip("torch")
    from lugha.training.exp_baselines import _subset
    from lugha.training.fusion import HeadData

    rng = np.random.default_rng(0)
    data = HeadData(labels=np.arange(6) % 2, langs=np.array(["en", "sw"] * 3), groups=[str(i) for i in range(6)],
                    image_index=np.arange(6) % 3, image=rng.normal(size=(3, 4)).astype("f4"),
                    text=rng.normal(size=(6, 4)).astype("f4"))
    text, both = _subset(data, np.array([0, 2, 4]), True), _subset(data, np.array([0, 2, 4]), False)
    assert not text.image.any() and both.image.any()
    assert (text.text == both.text).all() and list(text.langs) == ["en", "en", "en"]


@pytest.mark.slow
def test_baselines_quick_on_tiny_demo(demo_small, tmp_path, capsys):
    pytest.importorskip("torch")
    import lugha.cli as cli

    out = tmp_path / "out"
    rc = cli.main(["experiments", "baselines", "--data", str(demo_small), "--model", "test-tiny", "--quick",
                   "--sizes", "100,200,100000", "--steps", "30", "--batch-size", "16", "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "baselines.json").read_text())
    p, langs = report["protocol"], report["languages"]
    n_rows = p["labelled_train_rows"]
    assert p["sizes"] == [100, 200, n_rows] and p["sizes_requested"] == [100, 200, 100000] and n_rows < 100000
    assert len(langs) == 16 and "en" in langs and p["steps"] == 30
    arms = {(a["arm"], a["pairs"]): a for a in report["arms"]}
    assert set(arms) == {(arm, n) for arm in ("text", "fusion") for n in p["sizes"]}
    for (arm, n), a in arms.items():
        assert sum(a["train_rows_per_language"].values()) == n
        assert set(a["per_language"]) == set(langs) and all(0 <= v <= 1 for v in a["per_language"].values())
        assert a["acc"] == pytest.approx(np.mean(list(a["per_language"].values())))
    # every (language, size) compared once; each row's numbers are the arms it compares
    assert len(report["gains"]) == len(langs) * len(p["sizes"])
    for g in report["gains"]:
        assert g["fusion"] == pytest.approx(arms["fusion", g["pairs"]]["per_language"][g["lang"]])
        assert g["text"] == pytest.approx(arms["text", g["pairs"]]["per_language"][g["lang"]])
        assert g["diff_points"] == pytest.approx(100 * (g["fusion"] - g["text"]))
        assert g["ci_low_points"] <= g["diff_points"] <= g["ci_high_points"] and g["p_holm"] >= g["p_value"]
        assert g["verdict"] in ("better", "worse", "no difference shown")
    pooled = {g["pairs"]: g for g in report["pooled_gains"]}
    assert set(pooled) == set(p["sizes"]) and all(g["n"] == p["test_rows"] for g in pooled.values())
    for n, g in pooled.items():
        assert g["fusion"] == pytest.approx(arms["fusion", n]["acc_pooled"])
        assert report["summary"][str(n)]["pooled_gain_points"] == g["diff_points"]
        # an image is captioned in every language: the pooled rows count images as clusters, not rows as items
        assert g["clusters"] == p["test_images"] < g["n"] and g["method"].startswith("cluster t")
        assert g["ci_low_points"] <= g["diff_points"] <= g["ci_high_points"]
    html = (out / "baselines.html").read_text()
    assert html.count("<svg") == 3 and "Gain of adding the image" in html and ">yo<" in html
    # each plot also stands alone (for a README), the same SVG as on the page
    svgs = sorted(out.glob("baselines-*.svg"))
    assert [s.name for s in svgs] == ["baselines-1.svg", "baselines-2.svg", "baselines-3.svg"]
    for svg in svgs:
        text = svg.read_text()
        assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and text.strip() in html
