"""`lugha feedback report`: what a human-judgment study of a model needs, from the field app's database.

Per language and per tester group (the language each tester consented as): the share of judged results
judged correct, and judged culturally appropriate, with intervals; agreement between testers on items
judged more than once (Krippendorff's alpha); whether the automatic score of each item agrees with
people (per language); the items judged correct but culturally inappropriate (failure modes a metric
cannot see); and a model-card section written from all of it. The statistics live in
:mod:`lugha.data.feedback_stats`; the database reading in :mod:`lugha.data.feedback_store`.

Intervals of rates treat each judgment as independent; several testers judging one item are not, so
with heavy overlap they are somewhat narrow. The agreement interval resamples items, not judgments.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from lugha.data import feedback_stats as fs
from lugha.data.feedback_store import Judgment, read_judgments, read_scores

SCHEMA = "lugha.feedback_report/1"
ALL = "(all)"


def _rates(judgments: list[Judgment], method: str) -> dict[str, Any]:
    judged = [j for j in judgments if j.correct is not None]
    rated = [j for j in judgments if j.appropriate is not None]
    acc = fs.rate_interval(sum(j.correct for j in judged), len(judged), method)
    app = fs.rate_interval(sum(j.appropriate for j in rated), len(rated), method)
    return {"judgments": len(judgments), "items": len({j.item for j in judgments}),
            "testers": len({j.tester for j in judgments}), "judged": acc["n"], "correct": acc["k"],
            "accuracy": acc["rate"], "low": acc["low"], "high": acc["high"], "appropriate_judged": app["n"],
            "appropriate": app["rate"], "appropriate_low": app["low"], "appropriate_high": app["high"]}


def _by(judgments: list[Judgment], key: Callable[[Judgment], str], name: str, method: str) -> list[dict]:
    groups: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        groups[key(j)].append(j)
    rows = [{name: k, **_rates(v, method)} for k, v in sorted(groups.items())]
    if len(rows) > 1:
        rows.append({name: ALL, **_rates(judgments, method)})
    return rows


def _agreement(judgments: list[Judgment], field: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Alpha over items judged by two or more testers, per language and over all (nominal level)."""
    def alpha_of(js: list[Judgment]) -> dict[str, Any]:
        units: dict[str, dict[str, int]] = defaultdict(dict)
        for j in js:
            value = getattr(j, field)
            if value is not None:
                units[j.item][j.tester] = value  # a tester's later judgment of the same item replaces the first
        coders = sorted({c for u in units.values() for c in u})
        return fs.krippendorff_alpha(fs.reliability_matrix(list(units.values()), coders), n_boot=n_boot, seed=seed)

    langs = sorted({j.lang for j in judgments})
    rows = [{"lang": lang, **alpha_of([j for j in judgments if j.lang == lang])} for lang in langs]
    if len(rows) > 1:
        rows.append({"lang": ALL, **alpha_of(judgments)})
    return {"field": field, "by_lang": rows}


def _items(judgments: list[Judgment], scores: dict[str, float] | None) -> list[dict[str, Any]]:
    per: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        per[j.item].append(j)
    out = []
    for key, js in per.items():
        judged = [j.correct for j in js if j.correct is not None]
        if scores is not None:
            score = scores.get(key)
        else:  # the score the served model gave this result, as the database recorded it
            db_scores = [j.score for j in js if j.score is not None]
            score = float(np.mean(db_scores)) if db_scores else None
        out.append({"item": key, "lang": js[0].lang, "mode": js[0].mode, "query": js[0].query,
                    "result": js[0].result, "judgments": len(js), "testers": len({j.tester for j in js}),
                    "judged_correct": sum(judged), "judged": len(judged),
                    "share_correct": round(sum(judged) / len(judged), 4) if judged else None,
                    "score": None if score is None else round(float(score), 6)})
    return sorted(out, key=lambda r: (r["lang"], r["mode"], r["item"]))


def _correlation(items: list[dict], n_boot: int, seed: int) -> list[dict[str, Any]]:
    usable = [r for r in items if r["score"] is not None and r["share_correct"] is not None]
    langs = sorted({r["lang"] for r in items})
    groups = [(lang, [r for r in usable if r["lang"] == lang]) for lang in langs]
    if len(langs) > 1:
        groups.append((ALL, usable))
    return [{"lang": lang, **fs.score_correlation([r["score"] for r in rs], [r["share_correct"] for r in rs],
                                                  n_boot=n_boot, seed=seed)} for lang, rs in groups]


def _failure_modes(judgments: list[Judgment]) -> list[dict[str, Any]]:
    """Items that at least one tester judged correct but culturally inappropriate, worst first."""
    per: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        per[j.item].append(j)
    out = []
    for key, js in per.items():
        flagged = [j for j in js if j.correct == 1 and j.appropriate == 0]
        if flagged:
            out.append({"item": key, "lang": js[0].lang, "mode": js[0].mode, "query": js[0].query,
                        "result": js[0].result, "correct_but_inappropriate": len(flagged), "judgments": len(js),
                        "groups": sorted({j.group for j in flagged}),
                        "better_captions": sorted({j.better_caption for j in js if j.better_caption})})
    return sorted(out, key=lambda r: (-r["correct_but_inappropriate"], r["lang"], r["item"]))


def plan_progress(plan: dict[str, Any], judgments: list[Judgment]) -> dict[str, Any]:
    """How far a study got against its plan (``lugha feedback plan``): per planned item, how many different
    testers judged its query (the photo's SHA-256 or the typed text, in its language), and which items still
    lack judges. Judgments of queries the plan does not name are counted apart."""
    seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for j in judgments:
        seen[(j.mode, j.lang, j.query)].add(j.tester)
    planned = set()
    rows = []
    for item in plan["items"]:
        key = (item["mode"], item["lang"], item["image_sha256"] if item["mode"] == "image" else item["text"])
        planned.add(key)
        rows.append({"item": item["item"], "lang": item["lang"], "planned": len(item["testers"]),
                     "judged_by": len(seen.get(key, ()))})
    short = [r for r in rows if r["judged_by"] < plan["judges_per_item"]]
    return {"plan_items": len(rows), "judges_per_item": plan["judges_per_item"],
            "items_complete": len(rows) - len(short), "items_short": [r["item"] for r in short],
            "items_unjudged": sum(r["judged_by"] == 0 for r in rows),
            "judgments_off_plan": sum(1 for j in judgments if (j.mode, j.lang, j.query) not in planned)}


def build_report(db: str | os.PathLike, scores: str | os.PathLike | None = None, ci_method: str = "wilson",
                 n_boot: int = 1000, seed: int = 0, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """The study report as one JSON-ready dict (schema ``lugha.feedback_report/1``, README "Human judgment");
    with ``plan`` (a ``lugha.study_plan/1`` dict) also ``plan_progress``."""
    judgments = read_judgments(db)
    score_map = read_scores(scores) if scores else None
    items = _items(judgments, score_map)
    matched = sum(r["score"] is not None for r in items)
    return {
        "schema": SCHEMA, "db": str(db), "ci_method": ci_method, "confidence": 0.95,
        "score_source": str(scores) if scores else "database (the served model's score of each result)",
        "totals": {"judgments": len(judgments), "items": len(items), "testers": len({j.tester for j in judgments}),
                   "groups": sorted({j.group for j in judgments}), "languages": sorted({j.lang for j in judgments}),
                   "items_judged_twice_or_more": sum(r["testers"] >= 2 for r in items), "items_with_score": matched},
        "by_lang": _by(judgments, lambda j: j.lang, "lang", ci_method),
        "by_group": _by(judgments, lambda j: j.group, "group", ci_method),
        "agreement": {f: _agreement(judgments, f, n_boot, seed) for f in ("correct", "appropriate")},
        "correlation": _correlation(items, n_boot, seed),
        "failure_modes": _failure_modes(judgments),
        "items": items,
        **({"plan_progress": plan_progress(plan, judgments)} if plan else {}),
    }


def _ci(rate, low, high) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _alpha(row: dict | None) -> str:
    if not row or row.get("alpha") is None:
        return "–"
    ci = f" [{row['low']:.2f}, {row['high']:.2f}]" if row.get("low") is not None else ""
    return f"{row['alpha']:.2f}{ci} (n={row['units']})"


def _rho(row: dict | None) -> str:
    sp = (row or {}).get("spearman")
    if not sp:
        return "–"
    ci = f" [{sp['low']:+.2f}, {sp['high']:+.2f}]" if sp["low"] is not None else ""
    return f"{sp['rho']:+.2f}{ci}, p={sp['p']:.3g} (n={row['items']})"


def _short(query: str, mode: str) -> str:
    return f"photo {query[:12]}" if mode == "image" else f"“{query}”"


def model_card_section(report: dict[str, Any], top: int = 10) -> str:
    """A "Human judgment" section for MODEL_CARD.md, in Markdown, written from :func:`build_report`."""
    t = report["totals"]
    alpha = {r["lang"]: r for r in report["agreement"]["correct"]["by_lang"]}
    corr = {r["lang"]: r for r in report["correlation"]}
    lines = ["## Human judgment", "",
             f"{t['judgments']} judgments of {t['items']} items by {t['testers']} testers "
             f"(tester groups: {', '.join(t['groups']) or '–'}); {t['items_judged_twice_or_more']} items judged by two "
             f"or more testers. Rates with {report['ci_method']} 95% intervals; agreement is Krippendorff's alpha "
             f"(nominal) with a bootstrap interval over items; score vs human is Spearman's rho of the automatic "
             f"score ({report['score_source']}) against the share of testers who judged the item correct.", "",
             "| lang | judgments | judged correct | culturally appropriate | agreement (alpha) | score vs human |",
             "|---|---|---|---|---|---|"]
    for r in report["by_lang"]:
        lines.append(f"| {r['lang']} | {r['judgments']} | {_ci(r['accuracy'], r['low'], r['high'])} | "
                     f"{_ci(r['appropriate'], r['appropriate_low'], r['appropriate_high'])} | "
                     f"{_alpha(alpha.get(r['lang']))} | {_rho(corr.get(r['lang']))} |")
    lines += ["", "| tester group | judgments | judged correct | culturally appropriate |", "|---|---|---|---|"]
    for r in report["by_group"]:
        lines.append(f"| {r['group']} | {r['judgments']} | {_ci(r['accuracy'], r['low'], r['high'])} | "
                     f"{_ci(r['appropriate'], r['appropriate_low'], r['appropriate_high'])} |")
    modes = report["failure_modes"]
    lines += ["", f"Failure modes: {len(modes)} item(s) judged correct but culturally inappropriate"
                  + (":" if modes else ".")]
    for m in modes[:top]:
        better = f"; suggested: {', '.join(m['better_captions'])}" if m["better_captions"] else ""
        lines.append(f"- {m['lang']}: {_short(m['query'], m['mode'])} → {m['result']} "
                     f"({m['correct_but_inappropriate']} of {m['judgments']} judgments){better}")
    if len(modes) > top:
        lines.append(f"- … and {len(modes) - top} more (see the report's JSON)")
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], json_out: Path | None = None, html_out: Path | None = None,
                  card_out: Path | None = None) -> list[str]:
    """Write the files a user asked for; returns their paths."""
    import json

    from lugha.reports import write_report

    written = []
    if json_out:
        write_report(json_out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        written.append(str(json_out))
    if html_out:
        from lugha.data.feedback_html import render_html

        write_report(html_out, render_html(report, model_card_section(report)))
        written.append(str(html_out))
    if card_out:
        write_report(card_out, model_card_section(report))
        written.append(str(card_out))
    return written


def flat(rows: Iterable[dict]) -> list[dict]:
    """Alpha / correlation rows with their nested statistics flattened, for terminal tables."""
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if not isinstance(v, dict)}
        for name in ("spearman", "point_biserial"):
            if isinstance(r.get(name), dict):
                row.update({f"{name[:2]}_{k}": v for k, v in r[name].items() if k != "interval"})
        out.append(row)
    return out


__all__ = ["build_report", "plan_progress", "model_card_section", "write_outputs", "flat", "SCHEMA", "ALL"]
