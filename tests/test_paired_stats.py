"""The paired gate's statistics (lugha.training.paired_stats): exact values on small tables, Holm's order,
a published worked example, and the three decisions."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("statsmodels")

from lugha.gate_report import GateCell  # noqa: E402
from lugha.training import paired_stats as ps  # noqa: E402

Z95 = 1.6448536269514722  # one-sided 95 % normal quantile


def _items(both: int, lost: int, gained: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([1] * both + [1] * lost + [0] * gained + [0] * neither, dtype=bool)
    got = np.array([1] * both + [0] * lost + [1] * gained + [0] * neither, dtype=bool)
    return ref, got


def test_counts_of_a_paired_table_and_mismatched_items_are_refused():
    assert ps.paired_counts(*_items(40, 2, 1, 106)) == (2, 1, 149)
    with pytest.raises(ps.PairedOutcomeError, match=r"\(3,\).*\(2,\)"):
        ps.paired_counts([True, False, True], [True, False])


def test_margin_zero_is_the_exact_binomial_test_on_the_discordant_items():
    assert ps.p_drop_exceeds(5, 0, 149, 0.0) == pytest.approx(0.5 ** 5)  # all 5 discordant items lost
    assert ps.p_drop_exceeds(3, 1, 149, 0.0) == pytest.approx(5 / 16)  # P(X >= 3), X ~ Bin(4, 1/2)
    assert ps.p_drop_exceeds(0, 0, 149, 0.0) == 1.0  # nothing moved: no evidence


def test_tango_closed_forms():
    # no discordant item: the statistic is -sqrt(n d / (1 - d)), so the upper bound is z^2 / (n + z^2)
    assert ps.upper_bound(0, 0, 149) == pytest.approx(Z95 ** 2 / (149 + Z95 ** 2), rel=1e-9)
    # at delta 0 Tango's statistic is McNemar's z = (b - c) / sqrt(b + c)
    assert ps.tango_statistic(9, 4, 200, 0.0) == pytest.approx(5 / np.sqrt(13))
    lo, hi = ps.tango_interval(7, 7, 100)
    assert lo == pytest.approx(-hi) and lo < 0 < hi  # a symmetric table, a symmetric interval


def test_tango_interval_reproduces_the_published_worked_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (CRC 2017), chapter 8, and
    # Fagerland et al., Stat Med 2014;33:2850-2875: the Cavo et al. (2012) paired table [[59, 6], [16, 80]]
    # (n12 = 6, n21 = 16, N = 161), difference -0.0621, Tango's asymptotic score 95 % CI -0.1240 to -0.0054.
    # Checked against the authors' R package `contingencytables`, tests/testthat/test-ch8.R, which prints
    # "Tango asymptotic score CI: estimate = -0.0621 (95% CI -0.1240 to -0.0054)"; for the extreme table
    # [[0, 0], [3, 0]] the same file expects "-1.0000 (95% CI -1.0000 to 0.1230)".
    lo, hi = ps.tango_interval(6, 16, 161, 0.95)
    assert (round(lo, 3), round(hi, 3)) == (-0.124, -0.005)
    assert round(lo, 4) == -0.1240 and round(hi, 4) == -0.0054
    lo3, hi3 = ps.tango_interval(0, 3, 3, 0.95)  # n12 = 0, n21 = 3: the estimate -1 is the lower end
    assert (lo3, round(hi3, 4)) == (-1.0, 0.1230)


def test_holm_keeps_the_input_order():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert ps.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert ps.holm([]) == []


def test_the_three_decisions():
    fail = ps.make_cell("onnx/int8", "yo", "i2t_r1", *_items(100, 19, 0, 30), 1.0)
    ok = ps.make_cell("onnx/int8", "all", "i2t_r1", *_items(3000, 3, 2, 1000), 1.0)
    small = ps.make_cell("onnx/int8", "ta", "i2t_r1", *_items(38, 2, 0, 109), 1.0)
    fail, ok, small = ps.decide([fail, ok, small])
    assert isinstance(fail, GateCell) and fail.decision == "fail" and fail.p_holm <= 0.05
    assert ok.decision == "pass" and ok.ci_high_points < 1.0
    assert small.decision == "undecided" and small.drop_points == pytest.approx(200 / 149)
    assert small.ci_low_points < 0 < 1.0 < small.ci_high_points
    assert small.detectable_points > small.drop_points and small.decide_n > small.n
    assert "UNDECIDED" in small.line() and "lost 2, gained 0 of 149 images" in small.line()
    assert fail.detectable_points is None and fail.decide_n is None


def test_holm_turns_a_lone_failure_into_undecided_among_many_cells():
    marginal = ps.make_cell("c", "ha", "t2i_r1", *_items(50, 5, 0, 94), 0.0)  # p = 1/32 alone
    assert ps.decide([marginal])[0].decision == "fail"
    quiet = [ps.make_cell("c", f"l{i}", "t2i_r1", *_items(50, 1, 1, 97), 0.0) for i in range(9)]
    assert ps.decide([marginal, *quiet])[0].decision == "undecided"


def test_a_cell_without_flips_passes_from_the_n_it_names():
    cell = ps.decide([ps.make_cell("c", "ta", "i2t_r1", *_items(40, 0, 0, 109), 1.0)])[0]
    assert cell.decision == "undecided" and cell.flips == 0
    assert cell.decide_n == 268  # z^2 / (n + z^2) < 0.01  <=>  n > 99 z^2 = 267.8
    bigger = ps.decide([ps.make_cell("c", "ta", "i2t_r1", *_items(80, 0, 0, 188), 1.0)])[0]
    assert bigger.decision == "pass"


