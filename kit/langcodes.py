"""Language codes: every language a dataset names becomes one canonical BCP-47 tag.

Datasets name languages every way ISO allows (``hau``, ``ha``, ``ha_NG``, ``ger``, ``swh``); a model
trained on ``ha`` and evaluated on ``hau`` would look like two languages. The table below is the one
place a code is mapped: ISO 639-1 where it exists (BCP-47 requires the shortest code), else ISO 639-3.
639-2/B forms (``ger``, ``fre``), deprecated tags (``iw``, ``in``) and the individual-language codes
that CLDR folds into their macrolanguage (``swh``→``sw``, ``azj``→``az``, ``cmn``→``zh``) are aliases.
A code not in the table is an error, never a guess: a wrong language silently poisons per-language
metrics. Region, script and variant subtags are kept with BCP-47 casing (``pt-BR``, ``az-Latn``).
"""
from __future__ import annotations

import re
from typing import Iterable

from lugha.errors import DataError

# tag   aliases (639-3, 639-2/B, deprecated, folded individual codes)  | English name
_TABLE = """
af   afr              | Afrikaans
ak   aka              | Akan
am   amh              | Amharic
ar   ara arb          | Arabic
as   asm              | Assamese
az   aze azj          | Azerbaijani
be   bel              | Belarusian
bem  bem              | Bemba
bg   bul              | Bulgarian
bho  bho              | Bhojpuri
bm   bam              | Bambara
bn   ben              | Bengali
bo   bod tib          | Tibetan
bs   bos              | Bosnian
ca   cat              | Catalan
ceb  ceb              | Cebuano
ckb  ckb              | Central Kurdish
cs   ces cze          | Czech
cy   cym wel          | Welsh
da   dan              | Danish
de   deu ger          | German
dyu  dyu              | Dyula
ee   ewe              | Ewe
efi  efi              | Efik
el   ell gre          | Greek
en   eng              | English
eo   epo              | Esperanto
es   spa              | Spanish
et   est ekk          | Estonian
eu   eus baq          | Basque
fa   fas per pes      | Persian
ff   ful              | Fula
fi   fin              | Finnish
fil  fil              | Filipino
fon  fon              | Fon
fr   fra fre          | French
ga   gle              | Irish
gaa  gaa              | Ga
gl   glg              | Galician
gu   guj              | Gujarati
ha   hau              | Hausa
he   heb iw           | Hebrew
hi   hin              | Hindi
hr   hrv              | Croatian
ht   hat              | Haitian Creole
hu   hun              | Hungarian
hy   hye arm          | Armenian
ibb  ibb              | Ibibio
id   ind in           | Indonesian
ig   ibo              | Igbo
is   isl ice          | Icelandic
it   ita              | Italian
ja   jpn              | Japanese
jv   jav jw           | Javanese
ka   kat geo          | Georgian
kab  kab              | Kabyle
kam  kam              | Kamba
kg   kon              | Kongo
ki   kik              | Kikuyu
kk   kaz              | Kazakh
km   khm              | Khmer
kn   kan              | Kannada
ko   kor              | Korean
kr   kau              | Kanuri
ks   kas              | Kashmiri
ku   kur              | Kurdish
ky   kir              | Kyrgyz
la   lat              | Latin
lb   ltz              | Luxembourgish
lg   lug              | Ganda
ln   lin              | Lingala
lo   lao              | Lao
lt   lit              | Lithuanian
lua  lua              | Luba-Lulua
luo  luo              | Luo
lv   lav lvs          | Latvian
mai  mai              | Maithili
mg   mlg plt          | Malagasy
mi   mri mao          | Maori
mk   mkd mac          | Macedonian
ml   mal              | Malayalam
mn   mon khk          | Mongolian
mos  mos              | Mossi
mr   mar              | Marathi
ms   msa may zsm      | Malay
mt   mlt              | Maltese
my   mya bur          | Burmese
nb   nob              | Norwegian Bokmal
nd   nde              | North Ndebele
ne   nep npi          | Nepali
nl   nld dut          | Dutch
nn   nno              | Norwegian Nynorsk
no   nor              | Norwegian
nr   nbl              | South Ndebele
nso  nso              | Northern Sotho
ny   nya              | Nyanja
om   orm gaz          | Oromo
or   ori ory          | Odia
pa   pan              | Punjabi
pcm  pcm              | Nigerian Pidgin
pl   pol              | Polish
ps   pus pbt          | Pashto
pt   por              | Portuguese
qu   que              | Quechua
quz  quz              | Cusco Quechua
rn   run              | Rundi
ro   ron rum mo       | Romanian
ru   rus              | Russian
rw   kin              | Kinyarwanda
sa   san              | Sanskrit
sat  sat              | Santali
sd   snd              | Sindhi
si   sin              | Sinhala
sk   slk slo          | Slovak
sl   slv              | Slovenian
sn   sna              | Shona
so   som              | Somali
sq   sqi alb          | Albanian
sr   srp              | Serbian
ss   ssw              | Swati
st   sot              | Southern Sotho
su   sun              | Sundanese
sv   swe              | Swedish
sw   swa swh          | Swahili
ta   tam              | Tamil
te   tel              | Telugu
tg   tgk              | Tajik
th   tha              | Thai
ti   tir              | Tigrinya
tiv  tiv              | Tiv
tk   tuk              | Turkmen
tl   tgl              | Tagalog
tn   tsn              | Tswana
tr   tur              | Turkish
ts   tso              | Tsonga
tt   tat              | Tatar
tum  tum              | Tumbuka
tw   twi              | Twi
ug   uig              | Uyghur
uk   ukr              | Ukrainian
ur   urd              | Urdu
uz   uzb uzn          | Uzbek
ve   ven              | Venda
vi   vie              | Vietnamese
wo   wol              | Wolof
xh   xho              | Xhosa
yi   yid ji           | Yiddish
yo   yor              | Yoruba
yue  yue              | Cantonese
zh   zho chi cmn      | Chinese
zu   zul              | Zulu
"""

# Crossmodal-3600's 36 languages, as its captions.jsonl names them.
XM3600_LANGS = (
    "ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu",
    "id", "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th",
    "tr", "uk", "vi", "zh",
)
# The languages lugha is built for (the demo data and the low-resource targets of the project).
LUGHA_LANGS = ("en", "ha", "yo", "ig", "sw", "am", "so", "zu", "wo", "az", "hi", "bn", "ta")

# Names for script subtags seen in reports; other scripts show their code.
_SCRIPTS = {
    "Latn": "Latin", "Cyrl": "Cyrillic", "Arab": "Arabic", "Ethi": "Ethiopic", "Deva": "Devanagari",
    "Beng": "Bangla", "Taml": "Tamil", "Hans": "Simplified", "Hant": "Traditional", "Adlm": "Adlam",
    "Tfng": "Tifinagh", "Nkoo": "N'Ko", "Grek": "Greek", "Hebr": "Hebrew",
}


def _parse_table(text: str) -> tuple[dict[str, str], dict[str, str]]:
    aliases: dict[str, str] = {}
    names: dict[str, str] = {}
    for line in text.strip().splitlines():
        codes, name = line.split("|")
        tag, *others = codes.split()
        names[tag] = name.strip()
        for code in (tag, *others):
            if aliases.setdefault(code, tag) != tag:  # pragma: no cover - a table typo
                raise AssertionError(f"language alias {code!r} maps to both {aliases[code]!r} and {tag!r}")
    return aliases, names


_ALIASES, _NAMES = _parse_table(_TABLE)
KNOWN_LANGS = tuple(sorted(_NAMES))
_BY_NAME = {name.lower(): tag for tag, name in _NAMES.items()}
_SUBTAG = re.compile(r"^[A-Za-z0-9]{1,8}$")


class UnknownLanguageError(DataError):
    """Language codes not in the table. ``rows`` holds every ``(where, code)`` pair, in input order."""

    MAX_CODES = 8
    MAX_ROWS_PER_CODE = 5

    def __init__(self, rows: list[tuple[str, str]]):
        self.rows = list(rows)
        super().__init__(self._message())

    def _message(self) -> str:
        by_code: dict[str, list[str]] = {}
        for where, code in self.rows:
            by_code.setdefault(code, []).append(where)
        parts = []
        for code, wheres in list(by_code.items())[: self.MAX_CODES]:
            shown = [w for w in wheres[: self.MAX_ROWS_PER_CODE] if w]
            more = len(wheres) - self.MAX_ROWS_PER_CODE
            where = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
            hint = _suggest(code)
            parts.append(f"{code!r}" + (f" at {where}" if where else "") + (f" (did you mean {hint}?)" if hint else ""))
        extra = len(by_code) - self.MAX_CODES
        tail = f"; and {extra} more code(s)" if extra > 0 else ""
        count = f"{len(self.rows)} row(s)" if len(self.rows) > 1 else "1 row"
        return (f"unknown language code(s) in {count}: " + "; ".join(parts) + tail
                + " (use ISO 639-1/639-3 or BCP-47, e.g. 'ha', 'hau', 'pt-BR')")


def _suggest(code: str) -> str | None:
    """A hint for names written where a code belongs ("Hausa" -> 'ha'); shown, never applied."""
    tag = _BY_NAME.get(code.strip().lower())
    return f"{tag!r} = {_NAMES[tag]}" if tag else None


def normalize_lang(code: str, where: str = "") -> str:
    """``code`` as canonical BCP-47 (``hau``→``ha``, ``pt_br``→``pt-BR``); :class:`UnknownLanguageError`
    (naming ``where``) when the language is not in the table or a subtag is malformed."""
    if not isinstance(code, str):
        raise UnknownLanguageError([(where, repr(code))])
    parts = code.strip().replace("_", "-").split("-")
    primary = _ALIASES.get(parts[0].lower())
    if primary is None or not all(_SUBTAG.match(p) for p in parts):
        raise UnknownLanguageError([(where, code)])
    rest = parts[1:]
    # Extended-language form (zh-yue): BCP-47's canonical form is the extlang alone (yue).
    if rest and len(rest[0]) == 3 and rest[0].isalpha():
        extlang = _ALIASES.get(rest[0].lower())
        if extlang is None:
            raise UnknownLanguageError([(where, code)])
        primary, rest = extlang, rest[1:]
    out = [primary]
    for i, sub in enumerate(rest):
        if sub.lower() == "x":  # private use: everything after it is opaque
            out.extend(s.lower() for s in rest[i:])
            break
        if len(sub) == 4 and sub.isalpha():
            out.append(sub.title())  # script
        elif (len(sub) == 2 and sub.isalpha()) or (len(sub) == 3 and sub.isdigit()):
            out.append(sub.upper())  # region
        elif len(sub) >= 5 or (len(sub) == 4 and sub[0].isdigit()):
            out.append(sub.lower())  # variant
        else:
            raise UnknownLanguageError([(where, code)])
    return "-".join(out)


def language_name(code: str) -> str:
    """English display name for reports: ``ha`` → ``Hausa``, ``pt-BR`` → ``Portuguese (BR)``."""
    tag = normalize_lang(code)
    primary, *subtags = tag.split("-x-")[0].split("-")  # private-use parts mean nothing to a reader
    shown = [_SCRIPTS.get(s, s) for s in subtags]
    return _NAMES[primary] + (f" ({', '.join(shown)})" if shown else "")


class LangNormalizer:
    """Normalises the language of many rows, collecting every unknown one so the user fixes them all in
    one pass; call :meth:`check` when done. Results are cached (a dataset repeats a few codes)."""

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}
        self.bad: list[tuple[str, str]] = []

    def __call__(self, code: str, where: str) -> str | None:
        key = code if isinstance(code, str) else repr(code)
        if key not in self._cache:
            try:
                self._cache[key] = normalize_lang(code)
            except UnknownLanguageError:
                self._cache[key] = None
        tag = self._cache[key]
        if tag is None:
            self.bad.append((where, key))
        return tag

    def check(self) -> None:
        if self.bad:
            raise UnknownLanguageError(self.bad)


def normalize_langs(codes: Iterable[str]) -> list[str]:
    """A user's ``--langs ha,yor,sw`` list, normalised; all unknown ones reported together."""
    norm = LangNormalizer()
    out = [norm(c, f"item {i + 1}") for i, c in enumerate(codes)]
    norm.check()
    return [c for c in out if c is not None]


__all__ = [
    "normalize_lang", "normalize_langs", "language_name", "LangNormalizer", "UnknownLanguageError",
    "KNOWN_LANGS", "XM3600_LANGS", "LUGHA_LANGS",
]
