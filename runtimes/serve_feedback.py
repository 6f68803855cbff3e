"""Turn the field app's judgments into the next training round's data, and into a report of how the
model looked to native speakers next to how it looked to the automatic metric.

Export rules (one :class:`lugha.records.Record` per usable judgment):
  - a better caption typed by the tester -> a new pair (the photo or gallery image, that caption);
  - a result judged correct and not judged culturally inappropriate -> a confirmed pair
    (photo, label) for photo queries, (gallery image, the typed query) for text queries;
  - anything judged wrong or inappropriate without a better caption is counted, never exported;
  - only judgments approved in the admin page's review are exported (anyone on the hotspot can type a
    caption): ``unreviewed=True`` (``--unreviewed``) adds the not yet reviewed ones; rejected ones never.
Images are copied beside the manifest (``feedback_images/``) so the folder moves to a laptop whole.
"""
from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from lugha.atomic import atomic_path
from lugha.records import Record, write_manifest
from lugha.manifest import BundleManifest
from lugha.runtimes.serve_db import FeedbackDB

IMAGES_DIR = "feedback_images"
# The automatic metric each kind of judgment is compared with (first one the manifest has).
AUTO_METRICS = {"image": ("label_acc", "i2t_r1", "R@1"), "text": ("t2i_r1", "R@1")}


def _pairs(row: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """(kind, text) pairs a judgment yields, or the reason it yields none."""
    out = []
    if row["better_caption"]:
        out.append(("corrected", row["better_caption"]))
    if row["correct"] == 1 and row["appropriate"] != 0:
        out.append(("confirmed", row["result"] if row["mode"] == "image" else row["query_text"]))
    if out:
        return out, None
    if row["appropriate"] == 0:
        return [], "judged inappropriate, no better caption"
    if row["correct"] == 0:
        return [], "judged wrong, no better caption"
    return [], "no usable judgment"


def export_feedback(db: FeedbackDB | str | os.PathLike, out: str | os.PathLike,
                    unreviewed: bool = False) -> dict[str, Any]:
    """Write ``out`` (a JSONL dataset manifest) and copy its images beside it; returns a summary."""
    db = db if isinstance(db, FeedbackDB) else FeedbackDB.open_existing(db)
    out = Path(out)
    images = out.parent / IMAGES_DIR
    records: list[Record] = []
    skipped: Counter = Counter()
    seen: set[tuple[str, str, str]] = set()
    for row in db.feedback_rows():
        pairs, why = _pairs(row)
        if not why and row.get("review") == 0:
            why = "rejected in review"
        elif not why and row.get("review") is None and not unreviewed:
            why = "not reviewed (approve in the admin page, or export with --unreviewed)"
        if why:
            skipped[why] += 1
            continue
        src = db.upload_path(row["query_image"]) if row["mode"] == "image" else Path(row["result_image"] or "")
        if src is None or not src.is_file():
            skipped["image file missing"] += 1
            continue
        if row["mode"] == "image":
            name = src.name  # already content-addressed (<sha256>.jpg)
        else:
            from lugha.hashing import sha256_file

            name = f"{sha256_file(src)}{src.suffix.lower()}"
        if not (images / name).exists():  # whole or absent: a killed or disk-full export leaves no torn image
            with atomic_path(images / name) as tmp:
                shutil.copyfile(src, tmp)
        rel = f"{IMAGES_DIR}/{name}"
        for kind, text in pairs:
            key = (rel, text, row["lang"])
            if key in seen:
                skipped["duplicate pair"] += 1
                continue
            seen.add(key)
            records.append(Record(
                id=f"feedback-{row['id']}-{kind}", image=rel, text=text, lang=row["lang"], group=name,
                label=row["result"] if row["mode"] == "image" and kind == "confirmed" else None,
                meta={"source": "lugha-feedback", "kind": kind, "feedback_id": row["id"], "mode": row["mode"],
                      "tester_lang": row["tester_lang"], "model": row["model"], "precision": row["precision"],
                      "judged_result": row["result"], "correct": row["correct"], "appropriate": row["appropriate"],
                      "reviewed": row.get("review") == 1}))
    write_manifest(out, records)
    kinds = Counter(r.meta["kind"] for r in records)
    return {"manifest": str(out), "records": len(records), "corrected": kinds["corrected"],
            "confirmed": kinds["confirmed"], "skipped": dict(skipped), "languages": sorted({r.lang for r in records})}


def _metrics_for(manifest: BundleManifest, precision: str | None) -> tuple[str | None, dict]:
    """The manifest's metrics block for the served graphs: ``onnx/int8`` (export's keys) or ``int8``."""
    metrics = manifest.metrics or {}
    wanted = [f"onnx/{precision}", precision] if precision else []
    wanted += ["onnx/int8", "int8", "onnx/fp32", "fp32", "torch/fp32"]
    for key in wanted:
        if key and key in metrics:
            return key, metrics[key]
    first = next(iter(metrics), None)
    return first, metrics.get(first, {}) if first else {}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def feedback_report(db: FeedbackDB | str | os.PathLike, manifest: BundleManifest | None = None,
                    precision: str | None = None) -> dict[str, Any]:
    """Human-judged accuracy per (language, mode) beside the bundle's automatic metric, and the gap.

    ``human_top1``: of the rank-1 results a tester judged, the share judged correct: the human twin of
    R@1 / label accuracy. ``judged_correct``: the share over every judged result, any rank."""
    db = db if isinstance(db, FeedbackDB) else FeedbackDB.open_existing(db)
    groups: dict[tuple[str, str], Counter] = {}
    testers: dict[tuple[str, str], set] = {}
    for row in db.feedback_rows():
        c = groups.setdefault((row["lang"], row["mode"]), Counter())
        testers.setdefault((row["lang"], row["mode"]), set()).add(row["session"])
        c["rows"] += 1
        if row["correct"] is not None:
            c["judged"] += 1
            c["correct"] += row["correct"]
            if row["rank"] == 1:
                c["top1_judged"] += 1
                c["top1_correct"] += row["correct"]
        if row["appropriate"] is not None:
            c["appropriate_judged"] += 1
            c["appropriate"] += row["appropriate"]
        c["better_captions"] += bool(row["better_caption"])
    metric_key, metrics = _metrics_for(manifest, precision) if manifest else (None, {})
    rows = []
    for (lang, mode), c in sorted(groups.items()):
        human = _rate(c["top1_correct"], c["top1_judged"])
        auto_name, auto = None, None
        for name in AUTO_METRICS[mode]:
            value = metrics.get(lang, {}).get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                auto_name, auto = name, float(value)
                break
        rows.append({"lang": lang, "mode": mode, "testers": len(testers[(lang, mode)]), "judgments": c["rows"],
                     "top1_judged": c["top1_judged"], "human_top1": human,
                     "judged_correct": _rate(c["correct"], c["judged"]),
                     "appropriate": _rate(c["appropriate"], c["appropriate_judged"]),
                     "better_captions": c["better_captions"], "auto_metric": auto_name, "auto": auto,
                     "gap": round(human - auto, 4) if human is not None and auto is not None else None})
    return {"metrics_from": metric_key, "rows": rows, "total": sum(c["rows"] for c in groups.values())}


__all__ = ["export_feedback", "feedback_report", "IMAGES_DIR", "AUTO_METRICS"]
