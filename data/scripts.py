"""Which writing system a text is in, from code-point ranges (stdlib only, no ICU on a Pi).

A tokenizer's coverage differs more by script than by language: Hausa written in Latin with hooked
letters (ɓ ɗ ƙ) and Hausa written in Ajami (Arabic script) are two different problems. So the Latin
script is split in two: ``Latin`` (ASCII letters only) and ``Latin+diacritics`` (any other Latin letter:
accents, hooks, ɛ/ɔ, or a combining mark on a Latin letter), the group where subword vocabularies
trained mostly on English, French and Portuguese tend to fragment words.
"""
from __future__ import annotations

import bisect
import unicodedata
from collections import Counter

LATIN = "Latin"
LATIN_DIACRITICS = "Latin+diacritics"
COMMON = "Common"  # no letters at all: digits, punctuation, emoji

# (first, last, script), sorted by first code point. Blocks, not the Unicode Scripts.txt property:
# close enough for letters, and combining marks inherit the script of the letter they sit on anyway.
_RANGES = sorted([
    (0x0041, 0x005A, LATIN), (0x0061, 0x007A, LATIN), (0x00C0, 0x024F, LATIN), (0x0250, 0x02AF, LATIN),
    (0x1D00, 0x1DBF, LATIN), (0x1E00, 0x1EFF, LATIN), (0x2C60, 0x2C7F, LATIN), (0xA720, 0xA7FF, LATIN),
    (0xAB30, 0xAB6F, LATIN), (0xFF21, 0xFF3A, LATIN), (0xFF41, 0xFF5A, LATIN),
    (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"), (0x1C80, 0x1C8F, "Cyrillic"), (0x2DE0, 0x2DFF, "Cyrillic"),
    (0xA640, 0xA69F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"), (0x0590, 0x05FF, "Hebrew"), (0xFB1D, 0xFB4F, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x0870, 0x08FF, "Arabic"),
    (0xFB50, 0xFDFF, "Arabic"), (0xFE70, 0xFEFF, "Arabic"),
    (0x0700, 0x074F, "Syriac"), (0x0780, 0x07BF, "Thaana"), (0x07C0, 0x07FF, "NKo"),
    (0x0900, 0x097F, "Devanagari"), (0xA8E0, 0xA8FF, "Devanagari"), (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"), (0x0A80, 0x0AFF, "Gujarati"), (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0C7F, "Telugu"), (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"), (0x0D80, 0x0DFF, "Sinhala"), (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"), (0x0F00, 0x0FFF, "Tibetan"), (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"), (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"), (0x2D80, 0x2DDF, "Ethiopic"), (0xAB00, 0xAB2F, "Ethiopic"),
    (0x13A0, 0x13FF, "Cherokee"), (0x1400, 0x167F, "Canadian Syllabics"), (0x1780, 0x17FF, "Khmer"),
    (0x1800, 0x18AF, "Mongolian"), (0x2D30, 0x2D7F, "Tifinagh"), (0xA500, 0xA63F, "Vai"),
    (0xA6A0, 0xA6FF, "Bamum"), (0x1E900, 0x1E95F, "Adlam"),
    (0x3040, 0x309F, "Hiragana"), (0x30A0, 0x30FF, "Katakana"), (0x31F0, 0x31FF, "Katakana"),
    (0x2E80, 0x2FDF, "Han"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"), (0xF900, 0xFAFF, "Han"),
    (0x20000, 0x3134F, "Han"),
])
_STARTS = [r[0] for r in _RANGES]


def char_script(ch: str) -> str | None:
    """Script of one letter or mark by code-point block; ``None`` for characters outside every block."""
    cp = ord(ch)
    i = bisect.bisect_right(_STARTS, cp) - 1
    if i >= 0 and cp <= _RANGES[i][1]:
        return _RANGES[i][2]
    if unicodedata.category(ch).startswith("L"):
        return "Other"
    return None


def script_counts(text: str) -> Counter:
    """Letters per script in ``text``. Combining marks (U+0300 etc.) count towards the letter they follow,
    and make a Latin letter a ``Latin+diacritics`` one; digits, punctuation, symbols and emoji count for
    nothing."""
    counts: Counter = Counter()
    prev: str | None = None
    for ch in text:
        cat = unicodedata.category(ch)
        if cat.startswith("M"):
            if prev == LATIN:
                counts[LATIN] -= 1
                counts[LATIN_DIACRITICS] += 1
                prev = LATIN_DIACRITICS
            continue  # marks inside Indic/Ethiopic blocks belong to the preceding letter already
        if not cat.startswith("L"):
            prev = None
            continue
        script = char_script(ch)
        if script == LATIN and ord(ch) > 0x7F:
            script = LATIN_DIACRITICS
        if script:
            counts[script] += 1
        prev = script
    return +counts  # drop zero entries left by the mark bookkeeping


def detect_script(text: str) -> str:
    """The text's dominant script. A Latin text is ``Latin+diacritics`` as soon as one of its Latin
    letters is, since one ɗ is enough to tell a Hausa text from an English one."""
    counts = script_counts(text)
    if not counts:
        return COMMON
    latin_total = counts.get(LATIN, 0) + counts.get(LATIN_DIACRITICS, 0)
    best, n = counts.most_common(1)[0]
    if latin_total >= n and latin_total > 0:
        return LATIN_DIACRITICS if counts.get(LATIN_DIACRITICS) else LATIN
    return best


__all__ = ["char_script", "script_counts", "detect_script", "LATIN", "LATIN_DIACRITICS", "COMMON"]
