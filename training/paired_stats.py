"""Paired comparison of two models on the same items: is B worse than A by more than a margin?

Every gate cell (candidate x language x metric) reduces to a paired 2x2 table of per-item outcomes: item
i is a hit or a miss under the reference A and under the candidate B. Only the discordant items carry
information: ``lost`` (A hit, B miss) and ``gained`` (A miss, B hit). The drop is
``(lost - gained) / n``, a difference of paired proportions, and the questions are one-sided:

* **fail**: is the drop significantly larger than the margin? For margin 0 the exact binomial test on
  the discordant items (McNemar's exact test, :func:`scipy.stats.binomtest`); for a margin > 0 Tango's
  score test (Tango 1998, Stat Med 17:891), whose inversion is the interval below. The p-values of all
  cells of one comparison are Holm-corrected together (:func:`statsmodels.stats.multitest.multipletests`),
  so a large export does not block on noise just because it has many cells.
* **pass**: Tango's one-sided upper confidence bound of the drop is below the margin (non-inferiority
  shown for that cell at level ``alpha``, not adjusted: a pass claims nothing about the other cells).
* **undecided**: neither. The cell then says the smallest drop this n could detect (the fewest extra
  lost items that would fail, gained kept, alone among the cells under Holm: at ``alpha / m``) and the n
  at which the observed proportions would decide it.

Tango's interval is chosen over a Wald interval because it stays inside [-1, 1] and keeps its coverage
at the counts a language of 100-500 items has (a handful of discordant items); it is the same score
statistic as the test, so a cell's p-value and its interval never disagree at the margin.
"""
from __future__ import annotations

import math
import dataclasses
from typing import Sequence

import numpy as np

from lugha.gate_report import GateCell

ALPHA = 0.05  # one-sided level of both questions; the reported interval is the two-sided 1 - 2 * alpha one
DECISIONS = ("pass", "undecided", "fail")


class PairedOutcomeError(ValueError):
    """Two outcome vectors that cannot be paired (different lengths, or not the same items)."""


def paired_counts(reference: Sequence[bool], candidate: Sequence[bool]) -> tuple[int, int, int]:
    """(lost, gained, n) of two aligned per-item hit vectors."""
    a, b = np.asarray(reference, dtype=bool), np.asarray(candidate, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise PairedOutcomeError(f"per-item outcomes must be two vectors of the same items: shapes {a.shape} "
                                 f"(reference) and {b.shape} (candidate)")
    return int((a & ~b).sum()), int((~a & b).sum()), int(a.size)


def _restricted_p21(lost: float, gained: float, n: float, delta: float) -> float:
    """Tango's restricted MLE of the 'gained' cell probability under drop = ``delta`` (closed form)."""
    a = 2.0 * n
    b = -lost - gained + (2.0 * n - lost + gained) * delta
    c = -gained * delta * (1.0 - delta)
    return (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)


def tango_statistic(lost: float, gained: float, n: float, delta: float) -> float:
    """Tango's score statistic for H0: drop = ``delta``; large when the observed drop exceeds ``delta``."""
    var = n * (2.0 * _restricted_p21(lost, gained, n, delta) + delta * (1.0 - delta))
    diff = lost - gained - n * delta
    if var <= 0.0:  # only at delta = +-1 with no discordant mass left: the statistic is +-infinite
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def _solve(lost: float, gained: float, n: float, target: float) -> float:
    """The delta where Tango's statistic equals ``target`` (it decreases in delta)."""
    from scipy.optimize import brentq

    lo, hi = -1.0 + 1e-12, 1.0 - 1e-12
    f = lambda d: tango_statistic(lost, gained, n, d) - target  # noqa: E731
    if f(lo) <= 0.0:
        return -1.0
    if f(hi) >= 0.0:
        return 1.0
    return float(brentq(f, lo, hi, xtol=1e-12))


def tango_interval(lost: float, gained: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Tango's (1998) score interval for the drop (lost - gained) / n at two-sided ``level``."""
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - (1.0 - level) / 2.0))
    return _solve(lost, gained, n, z), _solve(lost, gained, n, -z)


def upper_bound(lost: float, gained: float, n: float, alpha: float = ALPHA) -> float:
    """One-sided (1 - alpha) upper confidence bound of the drop (Tango)."""
    from scipy.stats import norm

    return _solve(lost, gained, n, -float(norm.ppf(1.0 - alpha)))


def p_drop_exceeds(lost: float, gained: float, n: float, margin: float, exact: bool = True) -> float:
    """One-sided p-value of H0: drop <= margin (a fraction). Margin 0: the exact binomial test on the
    discordant items (``exact``; needs integer counts); otherwise Tango's score test."""
    from scipy.stats import binomtest, norm

    if margin == 0 and exact:
        k = int(lost + gained)
        return 1.0 if k == 0 else float(binomtest(int(lost), k, 0.5, alternative="greater").pvalue)
    return float(norm.sf(tango_statistic(lost, gained, n, margin)))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (compare each with ``alpha``), in the input order."""
    if not len(p_values):
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method="holm")[1]]


def make_cell(candidate: str, lang: str, metric: str, reference: Sequence[bool], got: Sequence[bool],
              margin_points: float, alpha: float = ALPHA) -> GateCell:
    """A cell with its drop, interval and raw p-value, not yet decided (:func:`decide` does that)."""
    lost, gained, n = paired_counts(reference, got)
    drop = lo = hi = 0.0
    p = 1.0
    if n:
        lo, hi = tango_interval(lost, gained, n, 1.0 - 2.0 * alpha)
        drop = (lost - gained) / n
        p = p_drop_exceeds(lost, gained, n, margin_points / 100.0)
    return GateCell(candidate, lang, metric, n, lost, gained, int(np.count_nonzero(reference)), float(margin_points),
                    100.0 * drop, 100.0 * lo, 100.0 * hi, p, p, "undecided")


def decide(cells: Sequence[GateCell], alpha: float = ALPHA) -> list[GateCell]:
    """Holm over all ``cells`` (one family), then each cell's decision; undecided cells of independent items
    get their detectable drop and deciding n (at ``alpha / m``: a cell alone among m must reach that under
    Holm); clustered cells (:func:`lugha.training.cluster_stats.clustered_cell`) are decided alike, without."""
    out = []
    alone = alpha / max(len(cells), 1)
    for cell, p in zip(cells, holm([c.p_value for c in cells], alpha)):
        if cell.n and p <= alpha:
            decision = "fail"
        elif cell.n and cell.ci_high_points < cell.margin_points:
            decision = "pass"
        else:
            decision = "undecided"
        cell = dataclasses.replace(cell, p_holm=p, decision=decision)
        if decision == "undecided" and cell.clusters is None:  # Tango's sizes assume independent items
            cell = dataclasses.replace(cell, detectable_points=detectable_drop(cell, alone),
                                       decide_n=deciding_n(cell, alpha, alone))
        out.append(cell)
    return out


def detectable_drop(cell: GateCell, level: float) -> float | None:
    """The smallest drop (points) that would fail at this n: the fewest lost items (gained kept) whose
    p-value reaches ``level``; None when even every other item lost would not."""
    margin = cell.margin_points / 100.0
    lo, hi = cell.lost, cell.n - cell.gained
    if hi < lo or p_drop_exceeds(hi, cell.gained, cell.n, margin) > level:
        return None
    while lo < hi:  # the p-value falls as lost grows
        mid = (lo + hi) // 2
        if p_drop_exceeds(mid, cell.gained, cell.n, margin) <= level:
            hi = mid
        else:
            lo = mid + 1
    return 100.0 * (lo - cell.gained) / cell.n


def deciding_n(cell: GateCell, alpha: float, fail_level: float, max_n: int = 10_000_000) -> int | None:
    """The smallest n at which the observed proportions (lost, gained scaled with n) would pass (drop
    below the margin) or fail (above it); None when the drop sits on the margin or the cell is empty."""
    if not cell.n:
        return None
    margin = cell.margin_points / 100.0
    drop = (cell.lost - cell.gained) / cell.n
    if drop == margin:
        return None
    scale = lambda m: (cell.lost * m / cell.n, cell.gained * m / cell.n, float(m))  # noqa: E731
    if drop < margin:
        decided = lambda m: upper_bound(*scale(m), alpha) < margin  # noqa: E731
    else:  # scaled counts are not integers: the score test stands in for the exact one at margin 0
        decided = lambda m: p_drop_exceeds(*scale(m), margin, exact=False) <= fail_level  # noqa: E731
    lo, hi = cell.n, cell.n
    while not decided(hi):
        lo, hi = hi, hi * 2
        if hi > max_n:
            return None
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi


def compare_runs(run: dict, base: dict, run_ids: dict, base_ids: dict, level: float = 0.95,
                 alpha: float = ALPHA) -> list[dict]:
    """Is a run better or worse than a baseline, per language and metric, on the same items?

    ``run`` / ``base``: ``{lang: {metric: hits}}`` with ``*_ids`` naming the items (from
    ``evaluate_embeddings(..., items=True)``); items are matched by id. Each row: the difference run -
    baseline in points with Tango's two-sided ``level`` interval, the two-sided exact McNemar p-value,
    Holm-corrected over all rows, and the verdict ``better`` / ``worse`` / ``no difference shown``."""
    from scipy.stats import binomtest

    rows = []
    for lang in sorted(set(run) & set(base)):
        for metric in sorted(set(run[lang]) & set(base[lang])):
            where = {item: i for i, item in enumerate(base_ids[lang][metric])}
            pairs = [(where[item], i) for i, item in enumerate(run_ids[lang][metric]) if item in where]
            if not pairs:
                continue
            b_idx, r_idx = (list(x) for x in zip(*pairs))
            lost, gained, n = paired_counts(np.asarray(base[lang][metric])[b_idx], np.asarray(run[lang][metric])[r_idx])
            lo, hi = tango_interval(gained, lost, n, level)  # run - baseline: the run's gains count up
            k = lost + gained
            p = 1.0 if k == 0 else float(binomtest(gained, k, 0.5, alternative="two-sided").pvalue)
            rows.append({"lang": lang, "metric": metric, "n": n, "run_only": gained, "baseline_only": lost,
                         "run": float(np.mean(np.asarray(run[lang][metric])[r_idx])),
                         "baseline": float(np.mean(np.asarray(base[lang][metric])[b_idx])),
                         "diff_points": 100.0 * (gained - lost) / n, "ci_low_points": 100.0 * lo,
                         "ci_high_points": 100.0 * hi, "p_value": p})
    return holm_verdicts(rows, alpha)


def holm_verdicts(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """``p_holm`` and ``verdict`` (better / worse / no difference shown) on rows of one family, in place."""
    for row, p in zip(rows, holm([r["p_value"] for r in rows], alpha)):
        row["p_holm"] = p
        row["verdict"] = "no difference shown" if p > alpha else "better" if row["diff_points"] > 0 else "worse"
    return rows


__all__ = ["compare_runs", "holm_verdicts", "PairedOutcomeError", "paired_counts", "tango_statistic", "tango_interval", "upper_bound",
           "p_drop_exceeds", "holm", "make_cell", "decide", "detectable_drop", "deciding_n", "ALPHA",
           "DECISIONS"]
