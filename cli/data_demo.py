"""`lugha data demo`: build the embedded multilingual emoji dataset, offline."""
from __future__ import annotations

import argparse

from lugha.cli._common import user_path

HELP = "Build the multilingual demo dataset (emoji pictures + CLDR names in 16 languages), offline."
DESCRIPTION = """Renders every fully-qualified emoji with Noto Color Emoji to an RGB PNG and pairs it with
its CLDR name in each language (text), its CLDR keywords (keywords) and its Unicode group (label, e.g.
"Food & Drink") and subgroup. Splits are by emoji (hash of --seed), 80/10/10, so one picture is never
in two splits. Writes DIR/manifest.jsonl, DIR/images/<codepoints>.png and DIR/LICENSES/. Re-running on
the same DIR reuses the images already there.

Sources (once per machine, then fully offline): scripts/fetch_demo_sources.sh installs
fonts-noto-color-emoji and unicode-data (apt) and cldr-annotations-full (npm, into .cache/node).

Default languages: en ha yo ig sw am so zu wo hi bn ta az, plus pcm ak ti (Wolof has names for only
~1,300 emoji in CLDR 48). Any CLDR locale works, e.g. --langs xh,rw,om.

Examples:
  lugha data demo --out datasets/demo
  lugha data demo --out /tmp/demo-small --langs en,ha,sw --limit 50 --image-size 64
  lugha data demo --out datasets/demo --json > datasets/demo/summary.json
  lugha data demo --out datasets/demo --cldr ~/cldr-annotations-full --font ~/NotoColorEmoji.ttf
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=user_path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--langs", help="comma-separated BCP-47 locales (default: the 16 demo languages)")
    parser.add_argument("--limit", type=int, help="at most N emoji, spread over all groups (for quick tries)")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square PNGs in px (128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hash-based split (0)")
    parser.add_argument("--cldr", type=user_path, metavar="DIR", help="cldr-annotations-full folder (default: search .cache/node, "
                                                      "$LUGHA_CLDR_DIR, ~/.cache/lugha/node)")
    parser.add_argument("--font", type=user_path, help="NotoColorEmoji.ttf (default: the Debian/Fedora/Arch font paths)")
    parser.add_argument("--emoji-test", type=user_path, help="Unicode emoji-test.txt (default: /usr/share/unicode/emoji/)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from lugha.data.demo import build_demo
    from lugha.records import SPLITS
    from lugha.reports import format_table, print_json

    summary = build_demo(args.out, langs=args.langs, limit=args.limit, image_size=args.image_size,
                         seed=args.seed, cldr=args.cldr, font=args.font, emoji_test=args.emoji_test)
    if args.json:
        print_json(summary)
        return 0
    rows = [{"lang": lang, **counts} for lang, counts in summary["languages"].items()]
    rows.append({"lang": "all", **{k: sum(r[k] for r in rows) for k in (*SPLITS, "total")}})
    print(format_table(rows, ["lang", *SPLITS, "total"]))
    print()
    print(format_table([{"split": s, **v} for s, v in summary["splits"].items()], ["split", "emoji", "pairs"]))
    img, src = summary["images"], summary["sources"]
    print(f"\n{summary['pairs']} pairs, {summary['emoji']} emoji images ({img['rendered']} rendered, "
          f"{img['reused']} reused, {len(img['skipped'])} without a picture in the font) in {summary['seconds']}s")
    print(f"sources: CLDR {src['cldr_version']}, Unicode emoji {src['emoji_version']}, {src['font']}")
    print(f"manifest: {summary['manifest']}")
    return 0
