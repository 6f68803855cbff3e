"""The accuracy gate's record: one typed cell per candidate x language x metric, kept in the manifest.

A bundle carries how its exported graphs compared with PyTorch fp32 on the same evaluation items, and
what the gate decided, so a device report or a reader of ``manifest.json`` never has to trust a bare
number: each cell holds the paired counts (``lost``, ``gained``, ``n``), the drop with its interval, the
one-sided p-value before and after Holm's correction, and the decision. The statistics live in
:mod:`lugha.training.paired_stats`; this module only describes the result (stdlib only, like all of kit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from lugha.errors import ConfigError

Decision = Literal["pass", "undecided", "fail"]
GatePolicy = Literal["default", "strict"]
POOLED = "all"  # the ``lang`` of a candidate's pooled cell (every language's items together)
COUNTED = {"i2t_r1": "images", "t2i_r1": "queries", "label_acc": "images", "head_acc": "rows"}


@dataclass(frozen=True)
class GateCell:
    """One paired comparison. Points are 100 x fractions; ``ci_*`` is the two-sided 1 - 2 alpha interval
    (each end a one-sided bound at alpha); ``detectable_points`` / ``decide_n``
    only when undecided and the items are independent (``clusters`` None)."""

    candidate: str  # "onnx/int8", or a run folder for `lugha eval --baseline`
    lang: str
    metric: str
    n: int
    lost: int  # reference hit, candidate miss
    gained: int  # reference miss, candidate hit
    reference_hits: int
    margin_points: float
    drop_points: float
    ci_low_points: float
    ci_high_points: float
    p_value: float  # one-sided, H0: drop <= margin
    p_holm: float
    decision: Decision
    detectable_points: float | None = None  # the smallest drop this n fails on (alone among the cells)
    decide_n: int | None = None  # the n at which the observed proportions would be decided
    # a pooled cell whose items come in clusters (an image's items in every language): the number of images,
    # decided with the cluster t (lugha.training.cluster_stats), so no per-item detectable_points / decide_n
    clusters: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.lost + self.gained <= self.n or min(self.lost, self.gained) < 0:
            raise ConfigError(f"{self.candidate}[{self.lang}].{self.metric}",
                              f"lost {self.lost} + gained {self.gained} must be within 0..n={self.n}")

    @property
    def flips(self) -> int:
        """Items whose outcome changed (lost or gained)."""
        return self.lost + self.gained

    @property
    def flip_rate(self) -> float:
        return self.flips / self.n if self.n else 0.0

    @property
    def reference(self) -> float:
        return self.reference_hits / self.n if self.n else float("nan")

    @property
    def value(self) -> float:
        return (self.reference_hits - self.lost + self.gained) / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        """The record plus the derived columns a report shows (not part of the manifest's schema)."""
        return {**asdict(self), "flips": self.flips, "flip_rate": round(self.flip_rate, 6),
                "reference": self.reference, "value": self.value}

    def line(self) -> str:
        """One line a person reads: what moved, by how much, how sure, what was decided."""
        noun = COUNTED.get(self.metric, "items")
        text = (f"{self.candidate} [{self.lang}] {self.metric}: drop {self.drop_points:+.2f} points "
                f"(90% CI {self.ci_low_points:+.2f} to {self.ci_high_points:+.2f}; margin {self.margin_points:g}), "
                f"p {self.p_value:.3g} (Holm {self.p_holm:.3g}): {self.decision.upper()}; lost {self.lost}, "
                f"gained {self.gained} of {self.n} {noun}" + (f" of {self.clusters} images" if self.clusters else ""))
        if self.decision == "undecided" and self.clusters:
            text += "; the images are the unit here: more images would decide it"
        elif self.decision == "undecided":
            detect = (f"this n detects drops >= {self.detectable_points:.2f} points"
                      if self.detectable_points is not None else "this n cannot detect a drop")
            text += f"; {detect}" + (f", n {self.decide_n} would decide it" if self.decide_n else "")
        return text


@dataclass(frozen=True)
class AccuracyGate:
    """What the export's accuracy gate compared and decided. ``overridden``: the export was written with
    ``--allow-drop`` although ``blocking`` lists cells that would have blocked it."""

    policy: GatePolicy
    alpha: float
    max_drop_points: float
    splits: tuple[str, ...]
    method: str  # the tests and the interval, in words
    cells: tuple[GateCell, ...] = ()
    pooled: tuple[GateCell, ...] = ()
    overridden: bool = False
    blocking: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("splits", "cells", "pooled", "blocking"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict:
        """Plain JSON (the manifest's form: cell fields only)."""
        from lugha._schema import to_dict

        return to_dict(self)

    def counts(self) -> dict[str, int]:
        """How many per-language cells each decision got."""
        out = {"pass": 0, "undecided": 0, "fail": 0}
        for c in self.cells:
            out[c.decision] += 1
        return out


__all__ = ["GateCell", "AccuracyGate", "Decision", "GatePolicy", "POOLED", "COUNTED"]
