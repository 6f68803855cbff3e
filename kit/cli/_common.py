"""Small helpers shared by subcommands."""
from __future__ import annotations

import argparse
import json
import sys


def not_available(what: str, issue: str):
    """A ``run`` for a subcommand whose capability is not built yet: says so, exits 3, never pretends."""

    def run(args: argparse.Namespace) -> int:
        print(f"lugha {what}: not available yet ({issue}).", file=sys.stderr)
        return 3

    return run


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
