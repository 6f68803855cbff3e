"""The model card's image-domain limitation, driven by the manifest's records (the export test checks the
demo bundle's MODEL_CARD.md carries it)."""
from __future__ import annotations

from lugha.data.image_domain import domain_limitation, image_domains
from lugha.records import Record, read_manifest


def rec(i: int, lang: str = "en", **meta) -> Record:
    return Record(id=f"r{i}-{lang}", image=f"images/{i}.png", text="x", lang=lang, group=str(i), meta=meta)


def test_the_demo_data_is_known_as_emoji_drawings(demo_small):
    records = read_manifest(demo_small)
    assert image_domains(records) == {"emoji": 1.0}
    line = domain_limitation(records)
    assert line.startswith("Training images are emoji drawings") and "not photographs" in line
    assert "lugha feedback plan" in line  # what to do about it


def test_a_declared_domain_drives_the_sentence():
    photos = [rec(i, image_domain="Photo") for i in range(4)]
    assert domain_limitation(photos).startswith("Training images are photographs:")
    custom = [rec(i, image_domain="satellite") for i in range(2)]
    assert domain_limitation(custom) == ("Training images are satellite images: accuracy on other kinds of images "
                                         "is unmeasured.")


def test_mixed_and_undeclared_domains_say_so():
    # one image captioned in two languages counts once: 3 photos and 1 drawing by image
    mixed = [rec(i, lang, image_domain="photo") for i in range(3) for lang in ("en", "sw")]
    mixed.append(rec(9, image_domain="drawing"))
    assert image_domains(mixed) == {"photo": 0.75, "drawing": 0.25}
    assert "a mix of domains (photo 75%, drawing 25%" in domain_limitation(mixed)
    assert "not declared (set `meta.image_domain`" in domain_limitation([rec(1)])
    assert "unknown" in domain_limitation([])
