"""The study statistics against published worked examples, and Krippendorff's alpha against simulated
testers whose agreement is known (lugha.data.study_sim.expected_alpha)."""
from __future__ import annotations

import numpy as np
import pytest

from lugha.data import feedback_stats as fs
from lugha.data.study_sim import expected_alpha

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
# values 1-5, missing data. Published: nominal alpha = 0.743 (ordinal 0.815, interval 0.849).
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
                     [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]


def test_alpha_reproduces_krippendorffs_worked_example():
    out = fs.krippendorff_alpha(np.array(KRIPPENDORFF_2011), n_boot=0)
    assert out["alpha"] == pytest.approx(0.743, abs=5e-4)
    # unit 12 has one value: not pairable, so 11 units and 4 coders enter
    assert out["units"] == 11 and out["coders"] == 4 and out["judgments"] == 40
    assert fs.krippendorff_alpha(np.array(KRIPPENDORFF_2011), level="interval", n_boot=0)["alpha"] == pytest.approx(
        0.849, abs=5e-4)
    # nltk ships nominal and interval distances only; ordinal is refused rather than silently nominal
    with pytest.raises(ValueError, match="level of measurement"):
        fs.krippendorff_alpha(np.array(KRIPPENDORFF_2011), level="ordinal", n_boot=0)


def test_rate_intervals_reproduce_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> Wilson 0.2553-0.3662,
    # Clopper-Pearson 0.2527-0.3676; 15/148 -> Wilson 0.0624-0.1605.
    w = fs.rate_interval(81, 263, "wilson")
    assert (w["low"], w["high"]) == (pytest.approx(0.2553, abs=1e-4), pytest.approx(0.3662, abs=1e-4))
    cp = fs.rate_interval(81, 263, "beta")
    assert (cp["low"], cp["high"]) == (pytest.approx(0.2527, abs=1e-4), pytest.approx(0.3676, abs=1e-4))
    w2 = fs.rate_interval(15, 148)
    assert (w2["low"], w2["high"]) == (pytest.approx(0.0624, abs=1e-4), pytest.approx(0.1605, abs=1e-4))
    assert fs.rate_interval(0, 0)["rate"] is None
    with pytest.raises(ValueError, match="interval method"):
        fs.rate_interval(1, 2, "normal")


def _simulated(n_items: int, n_coders: int, judges: int, flip: float, prevalence: float, seed: int):
    """Coders x items: each item's binary truth, copied by ``judges`` random coders with ``flip``."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_items) < prevalence).astype(float)
    data = np.full((n_coders, n_items), np.nan)
    for j in range(n_items):
        for c in rng.choice(n_coders, judges, replace=False):
            data[c, j] = 1 - truth[j] if rng.random() < flip else truth[j]
    return data, truth.mean()


@pytest.mark.parametrize("flip", [0.05, 0.15, 0.3])
def test_alpha_of_noisy_testers_is_near_its_expected_value(flip):
    data, prevalence = _simulated(1500, 6, 3, flip, 0.7, seed=int(flip * 100))
    out = fs.krippendorff_alpha(data, n_boot=200, seed=1)
    want = expected_alpha(flip, prevalence)
    assert out["alpha"] == pytest.approx(want, abs=0.04)
    assert out["low"] <= want <= out["high"] and out["high"] - out["low"] < 0.15


def test_alpha_is_one_for_perfect_agreement_and_near_zero_for_coin_flips():
    perfect, _ = _simulated(200, 5, 3, 0.0, 0.6, seed=3)
    assert fs.krippendorff_alpha(perfect, n_boot=50)["alpha"] == 1.0
    random_, _ = _simulated(1500, 5, 3, 0.5, 0.6, seed=4)
    out = fs.krippendorff_alpha(random_, n_boot=200)
    assert abs(out["alpha"]) < 0.05 and out["low"] < 0 < out["high"]


def test_alpha_is_undefined_without_variation_or_overlap():
    same = np.ones((3, 10))
    assert fs.krippendorff_alpha(same)["alpha"] is None and "same value" in fs.krippendorff_alpha(same)["why"]
    single = np.full((3, 10), np.nan)
    single[0] = 1
    single[0, :5] = 0
    assert fs.krippendorff_alpha(single)["why"].startswith("fewer than 2 items")


def test_score_correlation_finds_a_relation_and_not_a_made_up_one():
    rng = np.random.default_rng(0)
    score = rng.random(60)
    share = np.clip(np.round(score * 3 + rng.normal(0, 0.4, 60)) / 3, 0, 1)  # 3 judges, tracking the score
    out = fs.score_correlation(score, share, n_boot=300)
    assert out["spearman"]["rho"] > 0.6 and out["spearman"]["p"] < 1e-4 and out["spearman"]["low"] > 0.3
    assert out["point_biserial"]["r"] > 0.5 and out["point_biserial"]["low"] > 0
    unrelated = fs.score_correlation(rng.random(60), share, n_boot=300)
    assert unrelated["spearman"]["low"] < 0 < unrelated["spearman"]["high"]
    assert unrelated["spearman"]["p"] > 0.05
    assert "fewer than" in fs.score_correlation([0.1, 0.2], [0, 1])["why"]
    assert "do not vary" in fs.score_correlation([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1])["why"]
