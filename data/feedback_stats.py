"""The statistics of a human-judgment study, each from a kept library (none is hand-rolled here).

- a rate with its interval: :func:`statsmodels.stats.proportion.proportion_confint` (Wilson by default,
  ``beta`` = Clopper-Pearson), checked against Newcombe (1998)'s worked example in the tests;
- agreement between testers: Krippendorff's alpha from nltk's
  :meth:`nltk.metrics.agreement.AnnotationTask.alpha` (Apache-2.0; nominal level: correct / wrong is a
  category, not a number; ``interval`` uses nltk's squared-difference distance), checked against
  Krippendorff (2011)'s 4-coder, 12-unit example (nominal 0.743, interval 0.849); its interval is a bootstrap over items (:func:`scipy.stats.bootstrap`), the
  resampling Krippendorff recommends, because items, not single judgments, are the independent units;
- automatic score vs human judgment: Spearman's rho of the score against the share of testers who
  judged the item correct (:func:`scipy.stats.spearmanr`, bootstrap interval) and the point-biserial r
  against the majority verdict (:func:`scipy.stats.pearsonr` on a 0/1 variable, Fisher interval).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from lugha.errors import MissingDependencyError

INSTALL = "pip install 'lugha[study]'"
CI_METHODS = ("wilson", "beta")  # statsmodels' names; beta = Clopper-Pearson exact
MIN_CORRELATION_ITEMS = 4  # below this a correlation's interval says nothing


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"the human-judgment report needs `{module.split('.')[0]}`: {INSTALL}") from None


def _num(x: Any, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), digits)


def _bootstrap(data: tuple, statistic, n_boot: int, seed: int, confidence: float, paired: bool = False
               ) -> tuple[float | None, float | None, int]:
    """(low, high, undefined) of a percentile bootstrap by :func:`scipy.stats.bootstrap`. Resamples where
    the statistic is undefined (one value left, so alpha or rho has no denominator) are set aside rather
    than let one of them turn the whole interval into NaN; ``undefined`` counts them."""
    bootstrap = _need("scipy.stats").bootstrap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(data, statistic, n_resamples=n_boot, vectorized=False, paired=paired, method="percentile",
                        confidence_level=confidence, rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    defined = dist[np.isfinite(dist)]
    if len(defined) < n_boot / 2:  # mostly undefined: an interval from the rest would mislead
        return None, None, int(n_boot - len(defined))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high), int(n_boot - len(defined))


def rate_interval(k: int, n: int, method: str = "wilson", confidence: float = 0.95) -> dict[str, Any]:
    """``k`` of ``n`` as a rate with its two-sided interval; all None when ``n`` is 0."""
    if method not in CI_METHODS:
        raise ValueError(f"interval method {method!r}: choose one of {CI_METHODS}")
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None}
    low, high = _need("statsmodels.stats.proportion").proportion_confint(k, n, alpha=1 - confidence, method=method)
    return {"k": int(k), "n": int(n), "rate": _num(k / n), "low": _num(low), "high": _num(high)}


def reliability_matrix(units: Sequence[dict[str, int]], coders: Sequence[str]) -> np.ndarray:
    """Coders x units, NaN where a coder did not judge the unit (Krippendorff's reliability-data layout)."""
    index = {c: i for i, c in enumerate(coders)}
    data = np.full((len(coders), len(units)), np.nan)
    for j, unit in enumerate(units):
        for coder, value in unit.items():
            data[index[coder], j] = value
    return data


LEVELS = ("nominal", "interval")  # the distances nltk ships: binary_distance, interval_distance


def _nltk_alpha(units: Sequence[list[tuple[int, float]]], level: str) -> float:
    """nltk's alpha of per-unit (coder, value) lists; each position is its own item, so a unit drawn twice
    by the bootstrap counts twice rather than merging into one item."""
    agreement = _need("nltk.metrics.agreement")
    distance = _need("nltk.metrics.distance")
    dist = distance.binary_distance if level == "nominal" else distance.interval_distance
    triples = [(coder, item, value) for item, unit in enumerate(units) for coder, value in unit]
    return agreement.AnnotationTask(data=triples, distance=dist).alpha()


def krippendorff_alpha(data: np.ndarray, level: str = "nominal", n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> dict[str, Any]:
    """Alpha of a coders x units matrix (NaN = missing) with a bootstrap interval over units.

    Only units judged at least twice are pairable; ``alpha`` is None (with ``why``) when fewer than two
    such units exist or every judgment has the same value (alpha is then undefined: no disagreement is
    expected, so none can be measured; nltk would return 1 there)."""
    if level not in LEVELS:
        raise ValueError(f"level of measurement {level!r}: choose one of {LEVELS}")
    _need("nltk.metrics.agreement")
    data = np.asarray(data, dtype=float)
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2] if data.size else data
    out: dict[str, Any] = {"level": level, "units": int(pairable.shape[1]) if pairable.ndim == 2 else 0,
                           "coders": int((~np.isnan(pairable)).any(axis=1).sum()) if pairable.size else 0,
                           "judgments": int((~np.isnan(pairable)).sum()) if pairable.size else 0,
                           "alpha": None, "low": None, "high": None}
    values = np.unique(pairable[~np.isnan(pairable)]) if pairable.size else np.array([])
    if out["units"] < 2:
        return {**out, "why": "fewer than 2 items judged by 2 or more testers"}
    if len(values) < 2:
        return {**out, "why": "every judgment has the same value: alpha is undefined"}
    # missing judgments are left out of nltk's (coder, item, label) triples, as its docs prescribe
    units = [[(c, float(v)) for c, v in enumerate(col) if not np.isnan(v)] for col in pairable.T]
    estimate = _nltk_alpha(units, level)

    def stat(idx):
        sample = [units[j] for j in idx.astype(int)]
        if len({v for unit in sample for _, v in unit}) < 2:
            return np.nan  # a resample with one value: alpha undefined there
        return _nltk_alpha(sample, level)

    low = high = None
    undefined = 0
    if n_boot:
        low, high, undefined = _bootstrap((np.arange(pairable.shape[1]),), stat, n_boot, seed, confidence)
    return {**out, "alpha": _num(estimate), "low": _num(low), "high": _num(high), "undefined_resamples": undefined}


def score_correlation(scores: Sequence[float], share_correct: Sequence[float], n_boot: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Does the automatic score agree with people? Per item: its score against the share of its testers
    who judged it correct (Spearman) and against the majority verdict (point-biserial; ties at exactly
    half are left out of that one)."""
    stats = _need("scipy.stats")
    x, y = np.asarray(scores, dtype=float), np.asarray(share_correct, dtype=float)
    out: dict[str, Any] = {"items": int(len(x)), "spearman": None, "point_biserial": None}
    if len(x) < MIN_CORRELATION_ITEMS:
        return {**out, "why": f"fewer than {MIN_CORRELATION_ITEMS} items with both a score and a judgment"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "why": "the scores or the judgments do not vary: no correlation to measure"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = stats.spearmanr(x, y)
    low = high = None
    undefined = 0
    if n_boot:
        low, high, undefined = _bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, n_boot, seed,
                                          confidence, paired=True)
    out["spearman"] = {"rho": _num(sp.statistic), "p": _num(sp.pvalue, 6), "low": _num(low), "high": _num(high),
                       "undefined_resamples": undefined, "interval": "bootstrap percentile over items"}
    keep = y != 0.5
    majority, xs = (y[keep] > 0.5).astype(float), x[keep]
    if keep.sum() >= MIN_CORRELATION_ITEMS and 0 < majority.sum() < len(majority):
        pb = stats.pearsonr(majority, xs)
        ci = pb.confidence_interval(confidence_level=confidence)
        out["point_biserial"] = {"r": _num(pb.statistic), "p": _num(pb.pvalue, 6), "low": _num(ci.low),
                                 "high": _num(ci.high), "items": int(keep.sum()), "interval": "Fisher z"}
    return out


__all__ = ["rate_interval", "reliability_matrix", "krippendorff_alpha", "score_correlation", "CI_METHODS",
           "INSTALL", "LEVELS", "MIN_CORRELATION_ITEMS"]
