"""Script and language family of the demo languages, for the transfer experiment's "is a close source
better than English?" question.

Scripts are ISO 15924 codes (the script each language is written in by the demo's CLDR annotations).
Families are Glottolog 5 top-level families with the branch below them (Hammarström, Forkel,
Haspelmath & Bank, *Glottolog 5.0*, https://glottolog.org): Glottolog's ``Atlantic-Congo`` is the part
of Ethnologue's ``Niger-Congo`` these languages belong to. Nigerian Pidgin (``pcm``) is an English-
lexified creole: Glottolog files pidgins and creoles outside the genealogical families, so it gets its
own entry here rather than a borrowed family. A language not in the table is reported as ``unknown``
(a script subtag in its BCP-47 tag, ``az-Arab``, is still read), never guessed.
"""
from __future__ import annotations

SOURCE = ("ISO 15924 script codes; families: Glottolog 5.0 top-level family and branch "
          "(Glottolog 'Atlantic-Congo' = the demo's part of Ethnologue 'Niger-Congo'; pcm an English-lexified creole)")

# tag: (ISO 15924 script, Glottolog top-level family, branch)
LANG_INFO: dict[str, tuple[str, str, str]] = {
    "en": ("Latn", "Indo-European", "Germanic"),
    "hi": ("Deva", "Indo-European", "Indo-Aryan"),
    "bn": ("Beng", "Indo-European", "Indo-Aryan"),
    "ta": ("Taml", "Dravidian", "South Dravidian"),
    "az": ("Latn", "Turkic", "Oghuz"),
    "ha": ("Latn", "Afro-Asiatic", "Chadic"),
    "am": ("Ethi", "Afro-Asiatic", "Semitic"),
    "ti": ("Ethi", "Afro-Asiatic", "Semitic"),
    "so": ("Latn", "Afro-Asiatic", "Cushitic"),
    "yo": ("Latn", "Atlantic-Congo", "Volta-Niger"),
    "ig": ("Latn", "Atlantic-Congo", "Volta-Niger"),
    "sw": ("Latn", "Atlantic-Congo", "Bantu"),
    "zu": ("Latn", "Atlantic-Congo", "Bantu"),
    "wo": ("Latn", "Atlantic-Congo", "North Atlantic"),
    "ak": ("Latn", "Atlantic-Congo", "Kwa"),
    "pcm": ("Latn", "English-lexified creole", "Atlantic creole"),
}


def lang_info(tag: str) -> dict[str, str]:
    """``{"lang", "script", "family", "branch"}`` for ``tag``; ``unknown`` where the table has no entry."""
    base, *subtags = tag.split("-")
    script, family, branch = LANG_INFO.get(base, ("unknown", "unknown", "unknown"))
    explicit = next((s for s in subtags if len(s) == 4 and s.isalpha()), None)
    return {"lang": tag, "script": explicit.title() if explicit else script, "family": family, "branch": branch}


def closeness(a: str, b: str) -> str:
    """How related two languages are by the table: ``same branch``, ``same family``, ``same script`` or ``unrelated``
    (``unknown`` when either is missing from it)."""
    x, y = lang_info(a), lang_info(b)
    if "unknown" in (x["family"], y["family"]):
        return "same script" if x["script"] == y["script"] != "unknown" else "unknown"
    if x["family"] == y["family"]:
        return "same branch" if x["branch"] == y["branch"] else "same family"
    return "same script" if x["script"] == y["script"] else "unrelated"


__all__ = ["LANG_INFO", "SOURCE", "lang_info", "closeness"]
