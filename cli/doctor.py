"""`lugha doctor`: check this machine (and a bundle) before a field trip."""
from __future__ import annotations

import argparse
import sys

from lugha.cli._common import PUBKEY_HELP, user_path

HELP = "Check this machine before a field trip."
DESCRIPTION = """Say plainly what will and will not work here: CPU (NEON / dot-product on ARM, AVX2 / VNNI on
x86), 64-bit userland, glibc against the engines' wheels, Python, numpy, free memory and disk, and which
engines import (each in a child process, so one that crashes at import is reported, not fatal). With a
bundle: verify every file's SHA-256 and list the graphs each working engine can run.

  lugha doctor                          # the machine alone: exit 0 when an engine imports
  lugha doctor bundles/lite0-e5         # exit 0 when the bundle runs on at least one engine
  lugha doctor bundles/lite0-e5.zip --json > doctor.json
  lugha doctor bundles/lite0-e5.zip --pubkey publisher.pub.pem   # + its signature, by this key

Marks: ✓ fine, ! works with a caveat (read the advice), ✗ will not work, - not needed here.
"""
MARKS = {"ok": ("✓", "ok"), "warn": ("!", "!!"), "fail": ("✗", "XX"), "info": ("-", "--")}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=user_path, nargs="?", help="bundle folder, its manifest.json, or a .zip (optional)")
    parser.add_argument("--json", action="store_true", help="print facts, checks and the verdict as JSON")
    parser.add_argument("--pubkey", type=user_path, metavar="PEM", help=PUBKEY_HELP)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds each engine may take to import (default 120; a Pi Zero 2 is slow)")


def format_checklist(checks, ok: bool, unicode: bool = True) -> str:
    """One line per check, its advice indented below; the verdict last."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = MARKS[c.status][0 if unicode else 1]
        lines.append(f"{mark} {c.name.ljust(width)}  {c.summary}")
        if c.advice:
            lines.append(f"  {' ' * width}  -> {c.advice}")
    lines.append("")
    fail = MARKS["fail"][0 if unicode else 1]
    lines.append("ready: this machine can run it" if ok else f"NOT ready: fix the {fail} lines above")
    return "\n".join(lines)


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from lugha.runtimes.doctor import diagnose
    from lugha.runtimes.doctor_probe import gather_facts
    from lugha.reports import print_json

    facts = gather_facts(args.bundle, timeout=args.timeout, pubkey=args.pubkey)
    checks, ok = diagnose(facts)
    if args.json:
        print_json({"ok": ok, "checks": [c.__dict__ for c in checks], "facts": facts.to_dict()})
    else:
        print(format_checklist(checks, ok, unicode=_can_print("✓✗")))
    return 0 if ok else 1
