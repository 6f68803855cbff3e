"""`lugha feedback plan`: which items each tester of a human-judgment study sees.

Two guarantees, both checked by the tests:
  - coverage: every chosen item is judged by ``judges`` (default 3) different testers, so agreement
    (Krippendorff's alpha) can be measured on every item;
  - balance: items are chosen round-robin over languages, and within a language round-robin over labels,
    so languages differ by at most one item (labels within a language likewise) while the manifest has
    enough of each; testers' loads differ by at most one item, and each tester gets a mix of languages.

Testers are either a count (anyone judges any language) or a pool per language (``sw=3,yo=3``: native
speakers judge only their own language). Each tester's list is shuffled (seeded) so that order effects
do not line up with languages. The plan names each item's image SHA-256: a photo uploaded unchanged to
the field app is stored under that hash, which joins the study's judgments back to the plan.
"""
from __future__ import annotations

import csv
import io
import os
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from lugha.errors import ConfigError, DataError
from lugha.records import Record, read_manifest

SCHEMA = "lugha.study_plan/1"
ANY = "*"  # the pool of testers who judge every language
CSV_FIELDS = ("tester", "tester_lang", "order", "item", "record_id", "lang", "label", "mode", "image",
              "image_sha256", "text")


def parse_testers(spec: str) -> dict[str, int]:
    """``5`` -> five testers for any language; ``sw=3,yo=4`` -> pools of native speakers per language."""
    spec = spec.strip()
    if spec.isdigit():
        return {ANY: int(spec)}
    pools: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lang, _, count = part.partition("=")
        if not lang or not count.strip().isdigit():
            raise ConfigError("testers", f"{part!r}: write a count (5) or language=count pairs (sw=3,yo=3)")
        pools[lang.strip()] = int(count)
    if not pools:
        raise ConfigError("testers", "no testers given")
    return pools


def _round_robin(groups: Sequence[list]) -> list:
    out, queues = [], [list(g) for g in groups]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def choose_items(records: Sequence[Record], n_items: int, seed: int = 0) -> list[Record]:
    """``n_items`` records, round-robin over languages and within each language over labels."""
    rng = random.Random(seed)
    by_lang: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_lang[r.lang][r.label or ""].append(r)
    per_lang = []
    for lang in sorted(by_lang):
        labels = sorted(by_lang[lang])
        rng.shuffle(labels)  # which label comes first (and so gets the extra item) is the seed's choice
        for label in labels:
            rng.shuffle(by_lang[lang][label])
        per_lang.append(_round_robin([by_lang[lang][label] for label in labels]))
    chosen = _round_robin(per_lang)
    if len(chosen) < n_items:
        raise DataError(f"the manifest has {len(chosen)} usable records, the plan asks for {n_items} items")
    return chosen[:n_items]


def _assign(items: list[Record], pools: dict[str, int], judges: int, seed: int) -> dict[str, list[int]]:
    """Item indices per tester: each item to the ``judges`` least-loaded testers of its pool (fewest
    items overall first, which keeps loads within one of each other; then fewest of that language, which
    mixes languages; then a seeded tie-break)."""
    rng = random.Random(seed + 1)
    testers = {pool: [f"T{i + 1:02d}" if pool == ANY else f"{pool}-T{i + 1:02d}" for i in range(n)]
               for pool, n in pools.items()}
    tie = {t: rng.random() for ts in testers.values() for t in ts}
    load: Counter = Counter()
    lang_load: Counter = Counter()
    plan: dict[str, list[int]] = {t: [] for ts in testers.values() for t in ts}
    for i, r in enumerate(items):
        pool = ANY if ANY in testers else r.lang
        if pool not in testers:
            raise ConfigError("testers", f"item {r.id} is in {r.lang!r}, and no testers were given for it "
                                         f"(pools: {', '.join(sorted(testers))})")
        if len(testers[pool]) < judges:
            raise ConfigError("testers", f"pool {pool!r} has {len(testers[pool])} tester(s); every item needs "
                                         f"{judges} different judges")
        chosen = sorted(testers[pool], key=lambda t: (load[t], lang_load[t, r.lang], tie[t]))[:judges]
        for t in chosen:
            plan[t].append(i)
            load[t] += 1
            lang_load[t, r.lang] += 1
    for t in plan:
        rng.shuffle(plan[t])
    return plan


def _pool_of(tester: str, pools: dict[str, int]) -> str | None:
    """The language pool a tester id (``sw-T01``) was drawn from; None for the any-language pool."""
    return None if ANY in pools else tester.rsplit("-T", 1)[0]


def _sha256(path: Path) -> str | None:
    from lugha.hashing import sha256_file

    return sha256_file(path) if path.is_file() else None


def make_plan(manifest: str | os.PathLike, testers: str | dict[str, int], n_items: int, judges: int = 3,
              split: str = "test", languages: Sequence[str] = (), mode: str = "image", seed: int = 0) -> dict:
    """The study plan as one JSON-ready dict (schema ``lugha.study_plan/1``, README "Human judgment")."""
    if judges < 1 or n_items < 1:
        raise ConfigError("plan", f"needs at least one item and one judge (got {n_items} items, {judges} judges)")
    if mode not in ("image", "text"):
        raise ConfigError("mode", f"{mode!r}: image (testers photograph/upload the image) or text (they type it)")
    pools = parse_testers(testers) if isinstance(testers, str) else dict(testers)
    manifest = Path(manifest)
    records = [r for r in read_manifest(manifest) if (not split or r.split == split)
               and (not languages or r.lang in languages)
               and (ANY in pools or r.lang in pools)]
    if not records:
        raise DataError(f"{manifest}: no records in split {split!r}"
                        + (f" for languages {sorted(languages or pools)}" if languages or ANY not in pools else ""))
    items = choose_items(records, n_items, seed)
    assignment = _assign(items, pools, judges, seed)
    judged_by: dict[int, list[str]] = defaultdict(list)
    for t, idx in sorted(assignment.items()):
        for i in idx:
            judged_by[i].append(t)
    item_rows = [{"item": f"I{i + 1:03d}", "record_id": r.id, "lang": r.lang, "label": r.label, "mode": mode,
                  "image": str(r.image_path(manifest.parent)), "image_sha256": _sha256(r.image_path(manifest.parent)),
                  "text": r.text, "testers": sorted(judged_by[i])} for i, r in enumerate(items)]
    return {"schema": SCHEMA, "manifest": str(manifest), "split": split, "mode": mode, "seed": seed,
            "judges_per_item": judges, "pools": pools,
            "testers": [{"tester": t, "tester_lang": _pool_of(t, pools),
                         "items": [item_rows[i]["item"] for i in idx]} for t, idx in sorted(assignment.items())],
            "items": item_rows, "coverage": coverage(item_rows, assignment)}


def coverage(items: list[dict], assignment: dict[str, list[int]]) -> dict[str, Any]:
    """What the plan guarantees, stated as numbers a coordinator (and a test) can check."""
    judges = [len(r["testers"]) for r in items]
    loads = {t: len(idx) for t, idx in assignment.items()}
    by_lang = Counter(r["lang"] for r in items)
    by_label: dict[str, Counter] = defaultdict(Counter)
    for r in items:
        by_label[r["lang"]][r["label"] or ""] += 1
    return {"items": len(items), "min_judges": min(judges, default=0), "max_judges": max(judges, default=0),
            "assignments": sum(loads.values()), "tester_load": loads, "items_per_lang": dict(sorted(by_lang.items())),
            "items_per_label": {lang: dict(sorted(c.items())) for lang, c in sorted(by_label.items())}}


def plan_csv(plan: dict) -> str:
    """One row per (tester, item) in the order the tester sees them: the sheet a coordinator prints."""
    items = {r["item"]: r for r in plan["items"]}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for t in plan["testers"]:
        for order, key in enumerate(t["items"], start=1):
            r = items[key]
            w.writerow({"tester": t["tester"], "tester_lang": t["tester_lang"] or "", "order": order, "item": key,
                        "record_id": r["record_id"], "lang": r["lang"], "label": r["label"] or "", "mode": r["mode"],
                        "image": r["image"], "image_sha256": r["image_sha256"] or "", "text": r["text"]})
    return buf.getvalue()


__all__ = ["make_plan", "choose_items", "coverage", "plan_csv", "parse_testers", "SCHEMA", "CSV_FIELDS", "ANY"]
