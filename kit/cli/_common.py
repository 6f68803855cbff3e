"""Small helpers shared by subcommands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def not_available(what: str, issue: str):
    """A ``run`` for a subcommand whose capability is not built yet: says so, exits 3, never pretends."""

    def run(args: argparse.Namespace) -> int:
        print(f"lugha {what}: not available yet ({issue}).", file=sys.stderr)
        return 3

    return run


def user_path(text: str) -> str:
    """argparse ``type`` of every path a user types: made absolute against the working directory once, at
    the CLI boundary, before any work (no library call then depends on where the process stands). ``-``
    (stdout/stdin) stays ``-``; ``~`` is expanded; symlinks are kept as typed."""
    return text if text == "-" else os.path.abspath(os.path.expanduser(text))


def user_path_obj(text: str) -> Path:
    """:func:`user_path` for options whose code wants a :class:`~pathlib.Path`."""
    return Path(user_path(text))


def write_report(path: str | Path, text: str) -> None:
    """A report file the user named (``--json OUT``, ``--html OUT``): its folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


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
