"""What kind of images a dataset holds, and what that means for using a model trained on it.

A model card's metrics hold for images like the training images. A dataset says what those are with
``meta.image_domain`` on its records (``photo``, ``drawing``, ``emoji``, ``screenshot``, ``scan`` or
free text); the demo data is recognised by its own records (every demo record carries ``meta.emoji``:
one Noto Color Emoji drawing per emoji). Export writes the result into MODEL_CARD.md's limitations.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from lugha.records import Record

DOMAIN_FIELD = "image_domain"
UNDECLARED = "undeclared"
# domain -> (what the images are, what that means for use)
KNOWN = {
    "emoji": ("emoji drawings (Noto Color Emoji renderings on a plain background), not photographs",
              "accuracy on phone photos of real objects, people, food or places is unmeasured and likely lower; "
              "treat it as a demonstration model, and measure on photographs from the deployment (a field "
              "study: `lugha feedback plan` / `lugha feedback report`) before relying on it"),
    "drawing": ("drawings or illustrations, not photographs",
                "accuracy on photographs is unmeasured; measure on deployment photographs before relying on it"),
    "photo": ("photographs",
              "accuracy on photographs from other places, cameras or lighting than the training data's may be "
              "lower; measure on the deployment's own photographs"),
    "screenshot": ("screenshots", "accuracy on photographs or drawings is unmeasured"),
    "scan": ("scanned documents or pictures", "accuracy on camera photographs is unmeasured"),
}


def domain_of(record: Record) -> str:
    """A record's declared image domain; the demo's emoji records are known without a declaration."""
    declared = (record.meta or {}).get(DOMAIN_FIELD)
    if isinstance(declared, str) and declared.strip():
        return declared.strip().lower()
    if "emoji" in (record.meta or {}):
        return "emoji"
    return UNDECLARED


def image_domains(records: Iterable[Record]) -> dict[str, float]:
    """Share of images (by group, so one image captioned in many languages counts once) per domain."""
    per_image: dict[str, str] = {}
    for r in records:
        per_image.setdefault(r.group_key, domain_of(r))
    counts = Counter(per_image.values())
    total = sum(counts.values())
    return {d: round(n / total, 4) for d, n in counts.most_common()} if total else {}


def domain_limitation(records: Iterable[Record]) -> str:
    """One model-card limitation naming the training images' domain and what it means for use."""
    shares = image_domains(records)
    if not shares:
        return "No training images were found, so their domain is unknown."
    if len(shares) > 1:
        mix = ", ".join(f"{d} {100 * s:.0f}%" for d, s in shares.items())
        return (f"Training images are a mix of domains ({mix}, by image; `meta.{DOMAIN_FIELD}` on the records): "
                "metrics pool them, so a deployment that sees mostly one of them should be measured on that one.")
    domain = next(iter(shares))
    if domain == UNDECLARED:
        return (f"The training images' domain is not declared (set `meta.{DOMAIN_FIELD}`, e.g. photo or drawing, on "
                "the manifest's records): the metrics hold for images like the training images; measure on the "
                "deployment's own images before relying on them.")
    what, means = KNOWN.get(domain, (f"{domain} images", "accuracy on other kinds of images is unmeasured"))
    return f"Training images are {what}: {means}."


__all__ = ["domain_of", "image_domains", "domain_limitation", "DOMAIN_FIELD", "KNOWN", "UNDECLARED"]
