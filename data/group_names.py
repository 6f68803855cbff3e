"""The demo's labels in each demo language: names of the Unicode emoji groups, from CLDR.

The demo's classification label is the emoji-test.txt group ("Animals & Nature"), kept in English in the
manifest so every language shares one set of classes. CLDR translates the same categories for emoji
pickers (``characterLabels``: ``animals_nature`` -> Hausa "dabba ko ɗabiʼa"), so ``lugha data demo``
writes them to ``labels.json`` beside the manifest (``{lang: {label: name}}``, read by
``lugha.training.evaluate.load_label_names``): label prompts, label accuracy and the bundle's label packs
are then in the tester's language.

``GROUP_NAMES`` is copied from CLDR 48.2 (npm ``cldr-misc-full``, ``main/<locale>/characterLabels.json``;
Unicode licence, as the annotations: see ``LICENSES/``), keeping only real translations: an entry CLDR
inherits from English (all of Wolof, some of Igbo, Akan and Zulu) is left out, and the label falls back
to the English group name. :func:`group_names` reads an installed ``cldr-misc-full`` for any other locale.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lugha.data import emoji_sources as src

CLDR_MISC_PACKAGE = "cldr-misc-full"
# emoji-test.txt group -> CLDR characterLabels key ("Component", skin tones and hair, is not in the demo).
GROUP_KEYS = {"Smileys & Emotion": "smiley", "People & Body": "person", "Animals & Nature": "animals_nature",
              "Food & Drink": "food_drink", "Travel & Places": "travel_places", "Activities": "activities",
              "Objects": "objects", "Symbols": "symbols", "Flags": "flags"}

GROUP_NAMES: dict[str, dict[str, str]] = {
    "ha": {"Smileys & Emotion": "murmushi", "People & Body": "mutum", "Animals & Nature": "dabba ko ɗabiʼa",
           "Food & Drink": "abinci da abin sha", "Travel & Places": "bulaguro ko wuri", "Activities": "aiki",
           "Objects": "abu", "Symbols": "alama", "Flags": "tutoci"},
    "yo": {"Smileys & Emotion": "oju irerin", "People & Body": "eniyan", "Animals & Nature": "eranko tabi eda",
           "Food & Drink": "ounje ati omi", "Travel & Places": "irinajo tabi ibi", "Activities": "Ise",
           "Objects": "nnkan", "Symbols": "ami", "Flags": "awon filaagi"},
    "ig": {"People & Body": "mmadụ", "Animals & Nature": "anụmanụ ma ọbụ ụwa", "Food & Drink": "nrị & ịhe ọnụnụ",
           "Travel & Places": "njem maọbụ ebe", "Objects": "ịhe", "Symbols": "akara"},
    "sw": {"Smileys & Emotion": "kicheshi", "People & Body": "mtu", "Animals & Nature": "wanyama au ulimwengu",
           "Food & Drink": "vyakula na vinywaji", "Travel & Places": "safari au maeneo", "Activities": "shughuli",
           "Objects": "vitu", "Symbols": "alama", "Flags": "bendera"},
    "am": {"Smileys & Emotion": "ሳቅ", "People & Body": "ሰው", "Animals & Nature": "እንስሳት እና ተፈጥሮ",
           "Food & Drink": "ምግብ እና መጠጥ", "Travel & Places": "ጉዞ እና ቦታ", "Activities": "እንቅስቃሴዎች",
           "Objects": "ነገሮች", "Symbols": "ምልክቶች", "Flags": "ባንዲራዎች"},
    "so": {"Smileys & Emotion": "dhoola cadeyn", "People & Body": "shakhsi",
           "Animals & Nature": "xayawaan ama dabiici", "Food & Drink": "cuntada & cabbitaanka",
           "Travel & Places": "safarka ama meel", "Activities": "Waxqabad", "Objects": "wax",
           "Symbols": "calaamad", "Flags": "calan"},
    "zu": {"Smileys & Emotion": "okumoyizelayo", "People & Body": "umuntu", "Animals & Nature": "izilwane nemvelo",
           "Food & Drink": "Ukudla neziphuzo", "Travel & Places": "Ukuhamba nezindawo", "Objects": "Izinto",
           "Symbols": "Amasimbuli", "Flags": "Amafulegi"},
    "wo": {},
    "hi": {"Smileys & Emotion": "स्माइली", "People & Body": "व्यक्ति", "Animals & Nature": "पशु और प्रकृति",
           "Food & Drink": "खान-पान", "Travel & Places": "यात्रा या स्थान", "Activities": "गतिविधि",
           "Objects": "वस्तु", "Symbols": "चिह्न", "Flags": "झंडे"},
    "bn": {"Smileys & Emotion": "স্মাইলি", "People & Body": "ব্যক্তি", "Animals & Nature": "জীবজন্তু ও প্রকৃতি",
           "Food & Drink": "খাদ্য ও পানীয়", "Travel & Places": "ভ্রমন বা স্থান", "Activities": "কার্যকলাপ",
           "Objects": "বস্তু", "Symbols": "প্রতীক", "Flags": "পতাকা"},
    "ta": {"Smileys & Emotion": "ஸ்மைலி", "People & Body": "நபர்", "Animals & Nature": "விலங்குகள் & இயற்கை",
           "Food & Drink": "உணவு & பானம்", "Travel & Places": "பயணம் & இடங்கள்", "Activities": "செயல்பாடுகள்",
           "Objects": "பொருட்கள்", "Symbols": "சின்னங்கள்", "Flags": "கொடிகள்"},
    "az": {"Smileys & Emotion": "təbəssüm", "People & Body": "şəxs", "Animals & Nature": "Heyvanlar və Təbiət",
           "Food & Drink": "Yemək-içmək", "Travel & Places": "Səyahət və Yerlər", "Activities": "Aktivitələr",
           "Objects": "Obyektlər", "Symbols": "Simvollar", "Flags": "Bayraqlar"},
    "pcm": {"Smileys & Emotion": "Smaílí", "People & Body": "Pẹ́sin", "Animals & Nature": "Ánímọl ọ Néchọ",
           "Food & Drink": "Fud & Drink", "Travel & Places": "Trávul ọ Ples", "Activities": "Tins Wé De Hápun",
           "Objects": "Sọ́mtin", "Symbols": "Símbul", "Flags": "Flag-dẹm"},
    "ak": {"Smileys & Emotion": "simaili", "People & Body": "onipa", "Animals & Nature": "aboa anaa neekya",
           "Food & Drink": "aduane ne nsa", "Travel & Places": "akwantuo anaa beaeɛ", "Activities": "aktifiti",
           "Objects": "adeɛ", "Symbols": "simboo"},
    "ti": {"Smileys & Emotion": "ፍሽኽታ", "People & Body": "ሰብ", "Animals & Nature": "እንስሳታትን ተፈጥሮን",
           "Food & Drink": "መግብን መስተን", "Travel & Places": "ጉዕዞታትን መዓርፎታትን", "Activities": "ንጥፈታት",
           "Objects": "አቕሓ", "Symbols": "ምልክታት", "Flags": "ባንዴራታት"},
}


def find_cldr_misc() -> Path | None:
    """The ``main/`` folder of cldr-misc-full: ``$LUGHA_CLDR_MISC_DIR`` (the package folder), else an
    install beside cldr-annotations-full; ``None`` when neither is there."""
    given = os.environ.get("LUGHA_CLDR_MISC_DIR")
    candidates = [Path(given), Path(given) / "package"] if given else []
    candidates += [Path(base).parent / CLDR_MISC_PACKAGE for base in src.cldr_search_path()]
    for c in candidates:
        if (c / "main" / "en" / "characterLabels.json").is_file():
            return c / "main"
    return None


def read_character_labels(main: Path, lang: str) -> dict[str, str]:
    """``{group: name}`` of ``lang`` from cldr-misc-full's ``main/`` folder: only names that are not the
    English ones (CLDR fills untranslated entries from its root locale)."""
    def labels(locale: str) -> dict[str, str]:
        path = main / locale / "characterLabels.json"
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))["main"][locale]["characterLabels"]

    en, own = labels("en"), labels(lang)
    return {group: own[key] for group, key in GROUP_KEYS.items()
            if own.get(key) and own[key] != en.get(key) and own[key].lower() != group.lower()}


def group_names(lang: str, cldr_misc: Path | None = None) -> dict[str, str]:
    """``{group: name in lang}`` for the groups CLDR translates (English gets none: its labels are the
    group names themselves). The table first; else an installed cldr-misc-full."""
    if lang == "en":
        return {}
    if lang in GROUP_NAMES:
        return dict(GROUP_NAMES[lang])
    main = cldr_misc or find_cldr_misc()
    return read_character_labels(main, lang) if main else {}


__all__ = ["GROUP_KEYS", "GROUP_NAMES", "group_names", "read_character_labels", "find_cldr_misc"]
