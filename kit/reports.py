"""Plain-text and JSON reports shared by every floor: Markdown tables, JSON on stdout, report files.

In the contract floor so that libraries (bench, experiments) and the CLI format the same way without a
library importing the CLI back."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def write_report(path: str | Path, text: str) -> None:
    """A report file the user named (``--json OUT``, ``--html OUT``): its folder is created if missing; written
    whole or not at all (a killed benchmark never leaves half a JSON for a dashboard to choke on)."""
    from lugha.atomic import atomic_write_text

    atomic_write_text(path, text)


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
