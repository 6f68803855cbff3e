"""The human-judgment report as one self-contained HTML page: interval plots (inline SVG, no scripts, so it
opens offline on any laptop) and a scatter of automatic score against the share judged correct."""
from __future__ import annotations

import html
from typing import Any

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def interval_svg(rows: list[dict], key: str, title: str, width: int = 640) -> str:
    """One row per language/group: the rate as a dot, its interval as a bar, on a 0-100 % axis."""
    rows = [r for r in rows if r.get("accuracy") is not None]
    left, right, step = 110, 30, 26
    height = 50 + step * len(rows)
    x = lambda v: left + v * (width - left - right)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
           f'<text x="{left}" y="16" font-size="13">{html.escape(title)}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{x(tick):.1f}" y1="24" x2="{x(tick):.1f}" y2="{height - 20}" stroke="#ddd"/>'
                   f'<text x="{x(tick):.1f}" y="{height - 6}" font-size="11" text-anchor="middle">{tick:.0%}</text>')
    for i, r in enumerate(rows):
        y = 38 + i * step
        label = html.escape(str(r[key]))
        tip = html.escape(f"{r[key]}: {r['correct']}/{r['judged']} = {r['accuracy']:.1%} [{r['low']:.1%}, {r['high']:.1%}]")
        out.append(f'<text x="{left - 8}" y="{y + 4}" font-size="12" text-anchor="end">{label}</text>'
                   f'<g><title>{tip}</title><line x1="{x(r["low"]):.1f}" y1="{y}" x2="{x(r["high"]):.1f}" y2="{y}" '
                   f'stroke="#1f77b4" stroke-width="3"/><circle cx="{x(r["accuracy"]):.1f}" cy="{y}" r="5" '
                   f'fill="#1f77b4"/></g>')
    out.append("</svg>")
    return "".join(out)


def scatter_svg(items: list[dict], width: int = 640, height: int = 320) -> str:
    """Automatic score (x) against the share of testers who judged the item correct (y), one colour per
    language; a model whose score agrees with people puts its points on a rising band."""
    pts = [r for r in items if r.get("score") is not None and r.get("share_correct") is not None]
    if not pts:
        return "<p>No item has both an automatic score and a judgment.</p>"
    lo, hi = min(r["score"] for r in pts), max(r["score"] for r in pts)
    span = (hi - lo) or 1.0
    left, right, top, bottom = 50, 120, 24, 36
    x = lambda v: left + (v - lo) / span * (width - left - right)  # noqa: E731
    y = lambda v: top + (1 - v) * (height - top - bottom)  # noqa: E731
    langs = sorted({r["lang"] for r in pts})
    colour = {lang: PALETTE[i % len(PALETTE)] for i, lang in enumerate(langs)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="automatic score against human judgment">',
           f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="#999"/>'
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0)}" stroke="#999"/>',
           f'<text x="{(left + width - right) / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
           f'automatic score ({lo:.3g} to {hi:.3g})</text>',
           f'<text x="12" y="{top - 8}" font-size="11">share judged correct</text>']
    for tick in (0, 0.5, 1):
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4}" font-size="11" text-anchor="end">{tick:.0%}</text>')
    for r in pts:
        tip = html.escape(f"{r['lang']} {r['result']}: score {r['score']:.3g}, {r['judged_correct']}/{r['judged']} correct")
        out.append(f'<circle cx="{x(r["score"]):.1f}" cy="{y(r["share_correct"]):.1f}" r="4" fill="{colour[r["lang"]]}" '
                   f'fill-opacity="0.6"><title>{tip}</title></circle>')
    for i, lang in enumerate(langs):
        out.append(f'<circle cx="{width - right + 14}" cy="{top + 14 * i}" r="4" fill="{colour[lang]}"/>'
                   f'<text x="{width - right + 24}" y="{top + 14 * i + 4}" font-size="11">{html.escape(lang)}</text>')
    out.append("</svg>")
    return "".join(out)


def _md_table_to_html(lines: list[str]) -> str:
    cells = [[html.escape(c.strip()) for c in line.strip().strip("|").split("|")] for line in lines
             if not set(line.replace("|", "").strip()) <= {"-"}]
    head, body = cells[0], cells[1:]
    return ("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body) + "</table>")


def _card_html(card: str) -> str:
    """The model-card Markdown as HTML: its tables as tables, its list as a list, the rest as paragraphs."""
    out, table, items = [], [], []
    for line in card.splitlines()[1:]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out.append(_md_table_to_html(table))
            table = []
        if line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if table:
        out.append(_md_table_to_html(table))
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(out)


def render_html(report: dict[str, Any], card: str) -> str:
    t = report["totals"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lugha feedback report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
figure{{margin:1em 0}}</style></head><body>
<h1>Human judgment</h1>
<p>{t['judgments']} judgments of {t['items']} items by {t['testers']} testers, from <code>{html.escape(report['db'])}</code>.</p>
<figure>{interval_svg(report['by_lang'], 'lang', 'judged correct per language (95% interval)')}</figure>
<figure>{interval_svg(report['by_group'], 'group', 'judged correct per tester group (95% interval)')}</figure>
<h2>Automatic score against human judgment</h2>
<figure>{scatter_svg(report['items'])}</figure>
<h2>Model-card section</h2>
{_card_html(card)}
</body></html>
"""


__all__ = ["render_html", "interval_svg", "scatter_svg"]
