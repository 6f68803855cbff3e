"""Train/val/test assignment by group: deterministic, seedable and stable as a dataset grows.

Each group's split is a pure function of ``(seed, group)``: a SHA-256 of both, read as a number in
[0, 1), falls into a ratio bucket. So the same seed always gives the same split on any machine, adding
rows (or whole groups) never moves an existing group, and one group — an image with all its captions,
in every language — is never in two splits. Ratios are therefore met approximately (binomially), not
exactly; on a few hundred groups the error is a few percent.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Sequence

from lugha.errors import DataError
from lugha.records import SPLITS, Record

DEFAULT_RATIOS = (0.8, 0.1, 0.1)


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or weights like ``"8,1,1"``; two values mean no test split) -> fractions."""
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise DataError(f"--ratios {text!r}: expected numbers like 0.8,0.1,0.1") from None
    else:
        values = [float(v) for v in text]
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or any(v < 0 or v != v for v in values) or sum(values) <= 0:
        raise DataError(f"--ratios {text!r}: need 2 or 3 non-negative numbers (train,val[,test]) with a positive sum")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def group_fraction(group: str, seed: int) -> float:
    """Where ``group`` falls in [0, 1) for ``seed``; independent of every other group."""
    digest = hashlib.sha256(f"lugha-split\0{seed}\0{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_of(group: str, seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS) -> str:
    x, edge = group_fraction(group, seed), 0.0
    for name, ratio in zip(SPLITS, ratios):
        edge += ratio
        if x < edge:
            return name
    return next(name for name, r in zip(reversed(SPLITS), reversed(tuple(ratios))) if r > 0)  # rounding at 1.0


def existing_group_splits(records: Iterable[Record]) -> dict[str, str]:
    """The split each group already has; :class:`DataError` listing groups already in two splits."""
    seen: dict[str, set[str]] = {}
    for r in records:
        if r.split:
            seen.setdefault(r.group_key, set()).add(r.split)
    clashes = [f"{g!r} in {'/'.join(sorted(s))}" for g, s in seen.items() if len(s) > 1]
    if clashes:
        raise DataError(f"--keep-existing: {len(clashes)} group(s) already in more than one split: "
                        + ", ".join(clashes[:10]) + (" ..." if len(clashes) > 10 else "")
                        + "; fix them or split without --keep-existing")
    return {g: next(iter(s)) for g, s in seen.items()}


def assign_splits(records: Iterable[Record], ratios: str | Sequence[float] = DEFAULT_RATIOS, seed: int = 0,
                  keep_existing: bool = False) -> list[Record]:
    """Copies of ``records`` with ``split`` set by group. ``keep_existing``: a group that already has a
    split keeps it (and its new rows join it); only groups without one are assigned."""
    ratios = parse_ratios(ratios)
    records = list(records)
    fixed = existing_group_splits(records) if keep_existing else {}
    cache: dict[str, str] = {}
    out = []
    for r in records:
        g = r.group_key
        if g not in cache:
            cache[g] = fixed.get(g) or split_of(g, seed, ratios)
        out.append(dataclasses.replace(r, split=cache[g]))
    return out


def split_counts(records: Iterable[Record]) -> list[dict]:
    """Rows of language x split: records per split, then the groups (images) of each split overall."""
    from lugha.langcodes import UnknownLanguageError, language_name

    def name(lang: str) -> str:
        try:
            return language_name(lang)
        except UnknownLanguageError:  # a hand-written manifest; `lugha data check` reports it
            return "?"

    counts: dict[str, dict[str, int]] = {}
    groups: dict[str, set[str]] = {s: set() for s in (*SPLITS, "")}
    for r in records:
        row = counts.setdefault(r.lang, {s: 0 for s in (*SPLITS, "")})
        row[r.split] += 1
        groups[r.split].add(r.group_key)
    rows = []
    for lang in sorted(counts, key=lambda k: (-sum(counts[k].values()), k)):
        c = counts[lang]
        rows.append({"lang": lang, "language": name(lang), **{s: c[s] for s in SPLITS},
                     **({"none": c[""]} if c[""] else {}), "total": sum(c.values())})
    rows.append({"lang": "images", "language": "(groups)", **{s: len(groups[s]) for s in SPLITS},
                 **({"none": len(groups[""])} if groups[""] else {}),
                 "total": len(set().union(*groups.values()))})
    return rows


__all__ = ["assign_splits", "split_of", "group_fraction", "parse_ratios", "split_counts", "DEFAULT_RATIOS"]
