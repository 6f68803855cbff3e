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


def format_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """A Markdown table (readable on a terminal, pasteable into a README)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(v) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body])
