"""The cluster-robust paired difference (lugha.training.cluster_stats): a published worked example, scipy's
t-test where the two must agree, and what clustering is for: copies of one item are not new evidence."""
import numpy as np
import pytest
from scipy.stats import ttest_1samp

from lugha.training.cluster_stats import cluster_difference, clustered_cell, compare_clustered, holm_verdicts
from lugha.training.paired_stats import compare_runs, decide, make_cell

# Student (1908) / Cushny & Peebles: extra hours of sleep under two drugs, the same 10 patients (R's `sleep`)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_sleep_data_as_r_reports_it():
    # R: with(sleep, t.test(extra[group == 1], extra[group == 2], paired = TRUE))
    #    t = -4.0621, df = 9, p-value = 0.002833; 95 percent CI -2.4598858 -0.7001142; mean difference -1.58
    diff = cluster_difference(np.subtract(SLEEP_1, SLEEP_2), list(range(10)))
    assert diff.estimate == pytest.approx(-1.58)
    assert diff.df == 9
    assert diff.estimate / diff.se == pytest.approx(-4.0621, abs=5e-5)
    assert diff.p_value() == pytest.approx(0.002833, abs=5e-7)
    lo, hi = diff.interval(0.95)
    assert (lo, hi) == (pytest.approx(-2.4598858, abs=1e-6), pytest.approx(-0.7001142, abs=1e-6))


def test_equal_clusters_are_scipys_t_test_of_cluster_means():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(40), 5)
    d = rng.integers(-1, 2, size=clusters.size).astype(float) + (clusters % 3 == 0)  # cluster-correlated
    ours = cluster_difference(d, clusters)
    means = d.reshape(40, 5).mean(1)
    ref = ttest_1samp(means, 0.0)
    assert ours.estimate == pytest.approx(means.mean())
    assert ours.p_value() == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert ours.interval(0.95) == (pytest.approx(ci.low), pytest.approx(ci.high))
    for alt in ("greater", "less"):
        assert ours.p_value(0.1, alt) == pytest.approx(ttest_1samp(means, 0.1, alternative=alt).pvalue)


def test_copies_of_an_item_are_not_new_evidence():
    """16 languages of the same 149 images, every language scoring the image alike: the clustered row is the
    single-copy row; the per-row McNemar/Tango row (compare_runs) is about 4x narrower and far more certain."""
    rng = np.random.default_rng(1)
    run1, base1 = rng.random(149) < 0.55, rng.random(149) < 0.45
    run, base, images = np.tile(run1, 16), np.tile(base1, 16), np.tile(np.arange(149), 16)
    one = compare_clustered(run1, base1, np.arange(149))
    many = compare_clustered(run, base, images)
    assert many["clusters"] == 149 and many["n"] == 149 * 16
    assert many["diff_points"] == pytest.approx(one["diff_points"])
    assert many["ci_high_points"] - many["ci_low_points"] == pytest.approx(one["ci_high_points"] - one["ci_low_points"], rel=1e-9)
    ids = [str(i) for i in range(run.size)]
    naive = compare_runs({"all": {"m": run}}, {"all": {"m": base}}, {"all": {"m": ids}}, {"all": {"m": ids}})[0]
    assert naive["diff_points"] == pytest.approx(many["diff_points"])
    width = lambda r: r["ci_high_points"] - r["ci_low_points"]  # noqa: E731
    assert width(naive) < width(many) / 3
    assert naive["p_value"] < many["p_value"]


def test_holm_verdicts_and_no_spread():
    rows = [compare_clustered([1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 2, 3]),  # every cluster +1: shown, p = 0
            compare_clustered([1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 2, 3])]  # nothing differs
    holm_verdicts(rows)
    assert rows[0]["verdict"] == "better" and rows[0]["p_value"] == 0.0
    assert rows[1]["verdict"] == "no difference shown" and rows[1]["p_value"] == 1.0


def test_clustered_cell_decides_with_the_gate_and_is_more_cautious_than_a_per_row_cell():
    """Repeated images: the per-row (Tango) cell passes non-inferiority that the clustered cell cannot show."""
    rng = np.random.default_rng(3)
    ref1 = rng.random(60) < 0.5
    got1 = ref1.copy()
    got1[rng.choice(60, 3, replace=False)] ^= True
    ref, got, images = np.tile(ref1, 16), np.tile(got1, 16), np.tile(np.arange(60), 16)
    margin = 2.0  # the row cell's upper bound is -0.5 points, the clustered one's +3.2
    row_cell, cl_cell = decide([make_cell("c", "all", "m", ref, got, margin),
                                clustered_cell("c", "all", "m", ref, got, images, margin)])
    assert row_cell.drop_points == pytest.approx(cl_cell.drop_points)
    assert row_cell.decision == "pass"
    assert cl_cell.ci_high_points > row_cell.ci_high_points
    assert cl_cell.decision == "undecided" and cl_cell.p_holm > 0.05
    assert cl_cell.clusters == 60 and cl_cell.detectable_points is None and cl_cell.decide_n is None


def test_a_clustered_cell_with_nothing_moved_is_no_surer_than_its_items():
    """No flips: the cluster t's interval is the point 0, which alone would pass any margin on any n; the
    cell keeps Tango's per-item bound, so 150 unmoved items in 50 images stay undecided at 1 point (as
    150 independent items do: 268 decide) and 1,192 pass."""
    for n, decision in ((150, "undecided"), (1192, "pass")):
        hits = np.arange(n) % 3 == 0
        per_item, cl = decide([make_cell("c", "ha", "t2i_r1", hits, hits, 1.0),
                               clustered_cell("c", "ha", "t2i_r1", hits, hits, np.arange(n) % 50, 1.0)])
        assert cluster_difference(np.zeros(n), np.arange(n) % 50).interval(0.9) == (0.0, 0.0)
        assert cl.ci_high_points == per_item.ci_high_points > 0 and cl.p_value >= per_item.p_value
        assert per_item.decision == cl.decision == decision and cl.clusters == 50


def test_an_undecided_clustered_cell_says_images_would_decide_it():
    hits = np.arange(40) % 2 == 0
    got = hits.copy()
    got[:4] ^= True  # 2 lost, 2 gained, all in one of 8 images
    cell = decide([clustered_cell("onnx/int8", "all", "t2i_r1", hits, got, np.arange(40) // 5, 1.0)])[0]
    line = cell.line()
    assert cell.decision == "undecided" and "of 8 images" in line and "more images would decide it" in line
    assert "this n" not in line  # Tango's per-item sizes are not computed for clusters
