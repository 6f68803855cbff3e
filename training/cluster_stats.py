"""Paired comparisons whose items come in clusters.

The demo's test split captions each image once per language, so pooling 16 languages gives 16 rows per
image, and their outcomes move together (an image that is easy to find is easy in every language).
Counting the 2,356 rows as independent items, as McNemar's test and Tango's interval do, gives intervals
that are too narrow. Here the cluster (the image) is the unit:

* the difference run - baseline is the ratio estimate ``d = sum_k D_k / sum_k m_k`` over clusters k
  (``D_k``: the summed per-row differences of cluster k, each -1, 0 or +1; ``m_k``: its rows), i.e. the
  plain pooled difference;
* its standard error is the linearised (ratio-estimator) one,
  ``se^2 = K / (K - 1) * sum_k (D_k - d m_k)^2 / (sum_k m_k)^2`` (Cochran 1977, *Sampling Techniques*,
  section 6.13; the usual cluster-robust variance of a mean);
* intervals and tests use Student's t with K - 1 degrees of freedom (:mod:`scipy.stats`).

With equal cluster sizes this is exactly the one-sample t-test of the per-cluster mean differences
(:func:`scipy.stats.ttest_1samp`), which ``tests/test_cluster_stats.py`` checks, together with Student's
(1908) sleep data as R's ``t.test(..., paired = TRUE)`` reports it (t = -4.0621, df = 9, p = 0.002833,
95 % interval [-2.4599, -0.7001]). When each cluster has one row, it is the paired t-test of the rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lugha.errors import ConfigError
from lugha.gate_report import GateCell
from lugha.training.paired_stats import holm_verdicts, make_cell  # holm_verdicts re-exported: one family rule

METHOD = "cluster t (images as clusters; ratio estimate, linearised variance, t with K - 1 df)"


@dataclass(frozen=True)
class ClusterDifference:
    """``estimate`` (a fraction), its standard error, ``clusters`` (K) and ``n`` (rows)."""

    estimate: float
    se: float
    clusters: int
    n: int

    @property
    def df(self) -> int:
        return self.clusters - 1

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided ``level`` interval (a point when se is 0: every cluster moved by the same amount)."""
        from scipy.stats import t

        if self.df < 1 or not math.isfinite(self.se):
            return -math.inf, math.inf
        half = float(t.ppf(0.5 + level / 2.0, self.df)) * self.se
        return self.estimate - half, self.estimate + half

    def p_value(self, null: float = 0.0, alternative: str = "two-sided") -> float:
        """H0: difference = ``null`` (``greater``: H0 difference <= null; ``less``: >= null)."""
        from scipy.stats import t

        if self.df < 1 or not math.isfinite(self.se):
            return 1.0
        if self.se == 0.0:  # no spread: the estimate is the truth for these clusters
            above, below = self.estimate > null, self.estimate < null
            return {"two-sided": 0.0 if above or below else 1.0, "greater": 0.0 if above else 1.0,
                    "less": 0.0 if below else 1.0}[alternative]
        stat = (self.estimate - null) / self.se
        if alternative == "greater":
            return float(t.sf(stat, self.df))
        if alternative == "less":
            return float(t.cdf(stat, self.df))
        return float(min(1.0, 2.0 * t.sf(abs(stat), self.df)))


def cluster_difference(differences: Sequence[float], clusters: Sequence) -> ClusterDifference:
    """The pooled mean of ``differences`` (one per row) with the cluster-robust standard error."""
    d = np.asarray(differences, dtype=float)
    if len(clusters) != d.size:
        raise ConfigError("clusters", f"{len(clusters)} cluster labels for {d.size} rows")
    if not d.size:
        return ClusterDifference(0.0, math.nan, 0, 0)
    _, which = np.unique(np.asarray(clusters), return_inverse=True)
    totals, sizes = np.bincount(which, weights=d), np.bincount(which).astype(float)
    k, n = len(totals), float(sizes.sum())
    estimate = float(totals.sum() / n)
    if k < 2:
        return ClusterDifference(estimate, math.nan, k, int(n))
    resid = totals - estimate * sizes
    se = math.sqrt(k / (k - 1) * float(np.sum(resid ** 2))) / n
    return ClusterDifference(estimate, se, k, int(n))


def compare_clustered(run: Sequence[bool], baseline: Sequence[bool], clusters: Sequence, level: float = 0.95) -> dict:
    """One row of :func:`lugha.training.paired_stats.compare_runs`'s shape (not yet Holm-corrected) for
    items that come in clusters: difference run - baseline in points, its t interval, two-sided p."""
    r, b = np.asarray(run, dtype=bool), np.asarray(baseline, dtype=bool)
    if r.shape != b.shape:
        raise ConfigError("compare_clustered", f"run has {r.size} items, baseline {b.size}")
    diff = cluster_difference(r.astype(float) - b.astype(float), clusters)
    lo, hi = diff.interval(level)
    return {"n": int(r.size), "clusters": diff.clusters, "run_only": int((r & ~b).sum()),
            "baseline_only": int((~r & b).sum()), "run": float(r.mean()) if r.size else math.nan,
            "baseline": float(b.mean()) if b.size else math.nan, "diff_points": 100.0 * diff.estimate,
            "ci_low_points": 100.0 * lo, "ci_high_points": 100.0 * hi, "p_value": diff.p_value(), "method": METHOD}


def clustered_cell(candidate: str, lang: str, metric: str, reference: Sequence[bool], got: Sequence[bool],
                   clusters: Sequence, margin_points: float, alpha: float = 0.05) -> GateCell:
    """A non-inferiority cell like :func:`lugha.training.paired_stats.make_cell` (drop = reference -
    candidate; one-sided p of H0: drop <= margin; the 1 - 2 alpha interval), from the cluster t and
    Tango's per-item cell together: the wider interval's ends and the larger p-value. The cluster t is the
    honest one when images move (an image's items move together), but it collapses when few do: with no
    item flipped its interval is the single point 0 and would "pass" any margin on any n, where Tango's
    per-item bound (what the items would say were they independent, the least they can say) still needs
    268 items for a 1-point margin. :func:`~lugha.training.paired_stats.decide` decides it with the
    other cells; it carries its number of ``clusters``, so it gets no Tango ``detectable_points`` /
    ``decide_n`` (per independent item)."""
    ref, cand = np.asarray(reference, dtype=bool), np.asarray(got, dtype=bool)
    per_item = make_cell(candidate, lang, metric, ref, cand, margin_points, alpha)
    drop = cluster_difference(ref.astype(float) - cand.astype(float), clusters)
    lo, hi = drop.interval(1.0 - 2.0 * alpha)
    p = max(drop.p_value(margin_points / 100.0, "greater"), per_item.p_value)
    return GateCell(candidate, lang, metric, per_item.n, per_item.lost, per_item.gained, per_item.reference_hits,
                    float(margin_points), 100.0 * drop.estimate, min(100.0 * lo, per_item.ci_low_points),
                    max(100.0 * hi, per_item.ci_high_points), p, p, "undecided", clusters=drop.clusters)


__all__ = ["ClusterDifference", "cluster_difference", "compare_clustered", "holm_verdicts", "clustered_cell",
           "METHOD"]
