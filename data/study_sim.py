"""Simulated testers whose agreement is known, to check the report and to dry-run a study's analysis
before anyone is recruited.

Each planned item gets a hidden truth: whether the model's top result is right (with probability
``accuracy`` of its language) and whether it is culturally appropriate (``1 - inappropriate``), plus an
automatic score drawn higher for right results (``score_gap`` apart, ``score_noise`` spread). Each
tester reports the truth but flips each verdict with probability ``flip``, independently. For a binary
verdict with prevalence pi, two such testers disagree with probability 2 flip (1 - flip), and chance
predicts 2 q (1 - q) with q = pi (1 - flip) + (1 - pi) flip, so Krippendorff's alpha tends to

    alpha = 1 - flip (1 - flip) / (q (1 - q))        (1 when flip = 0)

as items grow: :func:`expected_alpha`, which the tests hold the report's alpha to.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

from lugha.errors import ConfigError


def expected_alpha(flip: float, prevalence: float) -> float:
    """The large-sample nominal alpha of testers who copy a binary truth of ``prevalence`` with ``flip``."""
    q = prevalence * (1 - flip) + (1 - prevalence) * flip
    return 1 - flip * (1 - flip) / (q * (1 - q))


def _query(item: dict) -> str:
    if item["mode"] == "text":
        return item["text"]
    # a plan without image files still needs a stable photo id: the hash of the record id stands in
    return item["image_sha256"] or hashlib.sha256(item["record_id"].encode()).hexdigest()


def simulate_study(plan: dict, flip: float = 0.1, accuracy: float | dict[str, float] = 0.7,
                   inappropriate: float = 0.05, score_gap: float = 0.2, score_noise: float = 0.1,
                   tester_langs: dict[str, str] | None = None, seed: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """(rows, truth): feedback rows in the field app's fields (``session``, ``tester_lang``, ``mode``,
    ``lang``, ``query_text``/``query_image``, ``result``, ``rank``, ``score``, ``correct``,
    ``appropriate``, ``better_caption``), one per planned (tester, item), and each item's hidden truth."""
    if not 0 <= flip <= 1 or not 0 <= inappropriate <= 1:
        raise ConfigError("simulate", f"flip ({flip}) and inappropriate ({inappropriate}) are probabilities")
    rng = random.Random(seed)
    labels = sorted({i["label"] or "" for i in plan["items"]})
    truth: dict[str, dict[str, Any]] = {}
    for item in plan["items"]:
        p = accuracy.get(item["lang"], 0.7) if isinstance(accuracy, dict) else accuracy
        right = rng.random() < p
        wrong_labels = [x for x in labels if x != item["label"]] or ["(other)"]
        truth[item["item"]] = {
            "correct": int(right), "appropriate": int(rng.random() >= inappropriate),
            "score": round(rng.gauss(0.5 + (score_gap / 2 if right else -score_gap / 2), score_noise), 6),
            "result": (item["label"] or item["text"]) if right else rng.choice(wrong_labels),
            "query": _query(item)}
    flipped = lambda v: 1 - v if rng.random() < flip else v  # noqa: E731
    items = {i["item"]: i for i in plan["items"]}
    rows = []
    for tester in plan["testers"]:
        group = (tester_langs or {}).get(tester["tester"]) or tester["tester_lang"] or "any"
        for key in tester["items"]:
            item, t = items[key], truth[key]
            correct = flipped(t["correct"])
            rows.append({"session": f"sim-{tester['tester']}", "tester_lang": group, "mode": item["mode"],
                         "lang": item["lang"], "query_text": item["text"] if item["mode"] == "text" else None,
                         "query_image": t["query"] if item["mode"] == "image" else None, "result": t["result"],
                         "rank": 1, "score": t["score"], "correct": correct, "appropriate": flipped(t["appropriate"]),
                         "better_caption": item["text"] if not correct and item["mode"] == "image" else None})
    return rows, truth


__all__ = ["simulate_study", "expected_alpha"]
