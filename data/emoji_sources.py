"""The demo data's three sources: where they live on disk, how to read them, how to draw an emoji.

- CLDR annotations (npm ``cldr-annotations-full``): the name (``tts``) and keywords of each emoji per locale.
- Unicode's ``emoji-test.txt`` (Debian ``unicode-data``): fully-qualified emoji with group and subgroup.
- Noto Color Emoji (Debian ``fonts-noto-color-emoji``): the pictures.

Every ``find_*`` raises :class:`MissingDependencyError` naming the install step, so a fresh machine is
one command away from a working ``lugha data demo``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lugha.errors import DataError, MissingDependencyError
from lugha.paths import lugha_home

CLDR_PACKAGE = "cldr-annotations-full"
CLDR_VERSION = "48.2.0"
FETCH_SCRIPT = "scripts/fetch_demo_sources.sh"
_NODE_MODULE = Path("node", "node_modules", CLDR_PACKAGE)  # under a .cache folder or LUGHA_HOME
_REPO = Path(__file__).resolve().parents[1]  # the checkout, when lugha is installed editable

FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",  # Debian, Ubuntu, Raspberry Pi OS
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",  # Fedora
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",  # Arch
)
EMOJI_TEST_PATHS = ("/usr/share/unicode/emoji/emoji-test.txt", "/usr/share/unicode-data/emoji/emoji-test.txt")

SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # Fitzpatrick modifiers: variants, not new pictures
VS16 = "\ufe0f"  # CLDR keys drop the emoji presentation selector; emoji-test.txt keeps it


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji of emoji-test.txt, in its CLDR order."""

    codepoints: str  # lower-case hex joined by "-", e.g. "2764-fe0f": ids and image file names
    emoji: str
    group: str
    subgroup: str

    @property
    def cldr_key(self) -> str:
        return self.emoji.replace(VS16, "")


@dataclass(frozen=True)
class Annotation:
    name: str
    keywords: list[str]


def _first_file(candidates) -> tuple[Path | None, list[str]]:
    looked = []
    for c in candidates:
        if c:
            looked.append(str(c))
            if Path(c).is_file():
                return Path(c), looked
    return None, looked


def _explicit(path, env: str) -> tuple[str | None, str]:
    """An explicit argument wins over the environment; either one must exist (no silent fallback)."""
    if path:
        return str(path), "argument"
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    return None, ""


def find_font(font=None) -> Path:
    given, how = _explicit(font, "LUGHA_EMOJI_FONT")
    if given:
        if Path(given).is_file():
            return Path(given)
        raise MissingDependencyError(f"emoji font {given} (from {how}) does not exist; run {FETCH_SCRIPT} "
                                     "or `apt-get install fonts-noto-color-emoji`")
    found, looked = _first_file([*FONT_PATHS, lugha_home() / "fonts" / "NotoColorEmoji.ttf"])
    if found:
        return found
    raise MissingDependencyError(f"Noto Color Emoji font not found (looked in {', '.join(looked)}); run "
                                 f"{FETCH_SCRIPT} or `apt-get install fonts-noto-color-emoji`, or pass --font")


def find_emoji_test(emoji_test=None) -> Path:
    given, how = _explicit(emoji_test, "LUGHA_EMOJI_TEST")
    if given:
        if Path(given).is_file():
            return Path(given)
        raise MissingDependencyError(f"emoji-test.txt {given} (from {how}) does not exist; run {FETCH_SCRIPT} "
                                     "or `apt-get install unicode-data`")
    found, looked = _first_file([*EMOJI_TEST_PATHS, lugha_home() / "emoji-test.txt"])
    if found:
        return found
    raise MissingDependencyError(f"Unicode emoji-test.txt not found (looked in {', '.join(looked)}); run "
                                 f"{FETCH_SCRIPT} or `apt-get install unicode-data`, or pass --emoji-test")


def _cldr_root(path: Path) -> Path | None:
    """The folder holding ``annotations/<locale>/annotations.json``: accepts the package folder, an
    unpacked ``npm pack`` (``package/``), ``node_modules`` or its parent, or a ``.cache`` folder."""
    for c in (path, path / "package", path / CLDR_PACKAGE, path / "node_modules" / CLDR_PACKAGE, path / _NODE_MODULE):
        if (c / "annotations" / "en" / "annotations.json").is_file():
            return c
    return None


def cldr_search_path() -> list[Path]:
    return [Path.cwd() / ".cache" / _NODE_MODULE, _REPO / ".cache" / _NODE_MODULE, lugha_home() / _NODE_MODULE]


def find_cldr(cldr=None) -> Path:
    install = (f"run {FETCH_SCRIPT} (or `npm install --prefix .cache/node {CLDR_PACKAGE}@{CLDR_VERSION}`)")
    given, how = _explicit(cldr, "LUGHA_CLDR_DIR")
    if given:
        root = _cldr_root(Path(given))
        if root:
            return root
        raise MissingDependencyError(f"CLDR annotations: {given} (from {how}) holds no "
                                     f"annotations/en/annotations.json; {install}")
    looked = cldr_search_path()
    for c in looked:
        root = _cldr_root(c)
        if root:
            return root
    raise MissingDependencyError(f"CLDR annotations (npm {CLDR_PACKAGE}) not found in "
                                 f"{', '.join(map(str, looked))}; {install}, or pass --cldr / set LUGHA_CLDR_DIR")


def cldr_version(root: Path) -> str:
    try:
        return json.loads((root / "package.json").read_text(encoding="utf-8")).get("version", "?")
    except (OSError, ValueError):
        return "?"


def cldr_locales(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "annotations").glob("*/annotations.json"))


def read_annotations(root: Path, lang: str) -> dict[str, Annotation]:
    """``{emoji without VS16: Annotation}`` for one locale (BCP-47 tag, as CLDR names its folders)."""
    locales = cldr_locales(root)
    if lang not in locales:  # also keeps a tag like "../x" from naming a path outside the package
        raise DataError(f"language {lang!r}: no CLDR annotations for it in {root}; available: {', '.join(locales)}")
    path = root / "annotations" / lang / "annotations.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["annotations"]["annotations"]
    except (ValueError, KeyError) as e:
        raise DataError(f"{path}: not a CLDR annotations file ({e})") from None
    out = {}
    for key, entry in data.items():
        tts = [t.strip() for t in entry.get("tts") or [] if t.strip()]
        if tts:  # a few locales list keywords only; without a name there is no caption
            # Some entries repeat keywords (CLDR merges inherited ones); keep the first of each.
            keywords = list(dict.fromkeys(k.strip() for k in entry.get("default") or [] if k.strip()))
            out[key.replace(VS16, "")] = Annotation(tts[0], keywords)
    return out


def read_emoji_test(path: Path) -> list[EmojiEntry]:
    """Fully-qualified emoji, without components and skin-tone variants, in the file's (CLDR) order."""
    out, group, subgroup = [], "", ""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif line.strip() and not line.startswith("#"):
                fields, _, _ = line.partition("#")
                cps, sep, status = fields.partition(";")
                if not sep:
                    raise DataError(f"{path}:{lineno}: expected 'code points ; status # comment'")
                if status.strip() != "fully-qualified":
                    continue
                try:
                    ints = [int(c, 16) for c in cps.split()]
                except ValueError:
                    raise DataError(f"{path}:{lineno}: bad code point in {cps.strip()!r}") from None
                if SKIN_TONES.isdisjoint(ints):
                    out.append(EmojiEntry("-".join(f"{c:x}" for c in ints), "".join(map(chr, ints)),
                                          group, subgroup))
    if not out:
        raise DataError(f"{path}: no fully-qualified emoji found; is it Unicode's emoji-test.txt?")
    return out


def emoji_test_version(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# Version:"):
                return line.split(":", 1)[1].strip()
            if not line.startswith("#"):
                break
    return "?"


class EmojiRenderer:
    """Draws emoji with one loaded font. Noto Color Emoji is a CBDT bitmap font: FreeType loads it only
    at its strike size (109 px, glyphs 136x128) and Pillow draws it only with ``embedded_color``."""

    STRIKE = 109

    def __init__(self, font_path: Path, background=(255, 255, 255)):
        from PIL import ImageFont, features

        try:
            self.font = ImageFont.truetype(str(font_path), self.STRIKE)
        except OSError as e:
            raise MissingDependencyError(f"{font_path}: cannot load as a {self.STRIKE}px colour emoji font "
                                         f"({e}); use Noto Color Emoji (`apt-get install fonts-noto-color-emoji`)")
        self.background = tuple(background)
        # Without libraqm, ZWJ sequences and keycaps are not shaped into one glyph; the width check in
        # render() then drops them rather than drawing several pictures side by side.
        self.shaping = bool(features.check("raqm"))
        self.cell = round(self.font.getlength("\U0001F600"))

    def render(self, emoji: str, size: int):
        """An RGB ``size`` x ``size`` image, or ``None`` when the font has no single picture for it."""
        from PIL import Image, ImageDraw

        if self.font.getlength(emoji) > 1.25 * self.cell:
            return None  # several glyphs: the font does not know this sequence
        left, top, right, bottom = self.font.getbbox(emoji)
        side = max(right - left, bottom - top, self.cell)
        canvas = Image.new("RGB", (side, side), self.background)
        x = (side - (right - left)) // 2 - left
        y = (side - (bottom - top)) // 2 - top
        ImageDraw.Draw(canvas).text((x, y), emoji, font=self.font, embedded_color=True)
        if self.is_blank(canvas):
            return None
        return canvas if side == size else canvas.resize((size, size), Image.LANCZOS)

    def is_blank(self, image, min_fraction: float = 0.005) -> bool:
        """True when under ``min_fraction`` of the pixels differ from the background (missing glyph)."""
        import numpy as np

        arr = np.asarray(image, dtype=np.int16)
        differs = (np.abs(arr - np.array(self.background, dtype=np.int16)) > 8).any(axis=-1)
        return bool(differs.mean() < min_fraction)
