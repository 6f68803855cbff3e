"""The JSON a phone sends, checked field by field before anything is stored: the body itself (no NaN or
Infinity), flags, texts (NFC, no control characters, no invisible bidi or zero-width characters) and a
judgment row as a whole. Pure functions, so the request layer only routes."""
from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from lugha.runtimes.serve_security import RequestRejected

MAX_CAPTION = 500
SHA = re.compile(r"^[0-9a-f]{64}$")
# Invisible characters that change how a caption *reads* without changing what it *looks* like: bidi
# overrides and isolates (a "Trojan source" caption renders one way and trains another) and zero-width
# spaces, word joiners and BOMs that split or glue words unseen. ZWJ (U+200D) and ZWNJ (U+200C) are kept:
# they are spelling in Persian, Urdu, Indic scripts and Sinhala, and in emoji sequences.
INVISIBLE = frozenset(
    [0x00AD, 0x061C, 0x180E, 0x200B, 0x200E, 0x200F, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF, 0xFFF9, 0xFFFA,
     0xFFFB, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_STRIP = {cp: None for cp in INVISIBLE}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def json_object(raw: bytes) -> dict:
    """A request body as a JSON object; NaN and Infinity (which Python's json accepts) are refused."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise RequestRejected(400, f"body is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise RequestRejected(400, "body must be a JSON object")
    return data


def flag(value, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    raise RequestRejected(400, f"{field}: expected true, false or null")


def text(value, field: str, limit: int, required: bool = False) -> str | None:
    """Stripped, NFC, invisible characters removed; ``None`` for empty when not required."""
    if isinstance(value, str):
        value = unicodedata.normalize("NFC", value.translate(_STRIP).strip())  # one spelling per letter
    if value is None or value == "":
        if required:
            raise RequestRejected(400, f"{field}: required")
        return None
    if not isinstance(value, str):
        raise RequestRejected(400, f"{field}: expected non-empty text")
    if len(value) > limit or any(unicodedata.category(ch) == "Cc" for ch in value):
        raise RequestRejected(400, f"{field}: at most {limit} characters, no control characters")
    return value


def score(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestRejected(400, "score: expected a finite number or null")
    return float(value)


def feedback_row(data: dict, session: str, tester_lang: str, engine, db) -> dict[str, Any]:
    """A judgment from the phone -> the columns of one ``feedback`` row (every field checked)."""
    mode = data.get("mode")
    lang = engine.check_lang(str(data.get("lang", "")))
    row = {"session": session, "tester_lang": tester_lang, "mode": mode, "lang": lang,
           "correct": flag(data.get("correct"), "correct"), "appropriate": flag(data.get("appropriate"), "appropriate"),
           "better_caption": text(data.get("better_caption"), "better_caption", MAX_CAPTION),
           "on_phone": int(data.get("on_phone") is True), "model": engine.bundle.manifest.model.name,
           "precision": engine.bundle.precision, "backend": engine.bundle.backend}
    if row["correct"] is None and row["appropriate"] is None and row["better_caption"] is None:
        raise RequestRejected(400, "feedback: give a judgment (correct, appropriate) or a better caption")
    rank = data.get("rank")
    row["rank"] = rank if isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= 100 else None
    row["score"] = score(data.get("score"))
    if mode == "image":
        qid = data.get("query_id")
        if not isinstance(qid, str) or not SHA.match(qid) or db.upload_path(qid) is None:
            raise RequestRejected(400, "query_id: not a stored photo (upload it with consent first)")
        label = text(data.get("result"), "result", 200, required=True)
        if label not in engine.bundle.label_pack(lang)[0]:
            raise RequestRejected(400, f"result: {label!r} is not a {lang} label of this bundle")
        row.update(query_image=qid, result=label)
    elif mode == "text":
        row["query_text"] = text(data.get("query_text"), "query_text", MAX_CAPTION, required=True)
        item = data.get("result")
        found = engine.gallery_item(item) if isinstance(item, int) and not isinstance(item, bool) else None
        if found is None:
            raise RequestRejected(400, "result: not a gallery image id")
        row.update(result=found.name, result_image=str(found.path))
    else:
        raise RequestRejected(400, "mode: expected 'image' or 'text'")
    return row


__all__ = ["json_object", "flag", "text", "score", "feedback_row", "INVISIBLE", "MAX_CAPTION", "SHA"]
