"""The experiments' HTML pages: inline SVG plots and tables in one self-contained file (no script, no
network), like the benchmark report, so a page opens the same on a field laptop as in CI artefacts.

Every plot takes plain numbers (fractions for accuracies, points for differences) and draws its own
axes; ``None`` is a missing value (drawn as nothing, never as zero).
"""
from __future__ import annotations

from html import escape

PALETTE = ["#1b6ca8", "#e07a1f", "#2a9d4b", "#c0392b", "#7d4fb0", "#8c6d31", "#d6579b", "#5f6b73", "#17a2b8", "#a6a13a"]
VERDICT_COLOUR = {"better": "#2a9d4b", "worse": "#c0392b", "no difference shown": "#5f6b73"}


def _svg(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}">', f'<text x="4" y="16" font-size="14" font-weight="bold">{escape(title)}</text>']


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {extra}>{escape(s)}</text>'


def _legend(names: list[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out += [f'<rect x="{x:.1f}" y="{y + 16 * i - 9:.1f}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>',
                _text(x + 14, y + 16 * i, name)]
    return out


def _y_grid(left: float, top: float, plot_w: float, plot_h: float, ymax: float) -> list[str]:
    """Six horizontal grid lines from 0 to ``ymax``, each labelled on the left axis."""
    out = []
    for k in range(6):
        v = ymax * k / 5
        y = top + plot_h * (1 - v / ymax)
        out += [f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>',
                _text(left - 4, y + 4, f"{v:.2g}", 10, "end")]
    return out


def bars_svg(title: str, categories: list[str], series: dict[str, list[float | None]], ylabel: str = "accuracy",
             ymax: float = 1.0, width: int = 860, height: int = 300) -> str:
    """Grouped vertical bars: one group per category (a language), one bar per series (an arm)."""
    left, top, bottom, right = 44, 28, 40, 150
    plot_w, plot_h = width - left - right, height - top - bottom
    names = list(series)
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    out = _svg(width, height, title)
    out += _y_grid(left, top, plot_w, plot_h, ymax)
    for c, cat in enumerate(categories):
        x0 = left + c * group_w + group_w * 0.1
        for s, name in enumerate(names):
            v = series[name][c]
            if v is None:
                continue
            h = plot_h * max(min(v / ymax, 1.0), 0.0)
            out.append(f'<rect x="{x0 + s * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                       f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(f"{cat} {name}: {v:.3f}")}'
                       f'</title></rect>')
        out.append(_text(left + (c + 0.5) * group_w, top + plot_h + 14, cat, 10, "middle"))
    out.append(_text(4, top + plot_h + 32, ylabel, 10))
    out += _legend(names, left + plot_w + 12, top + 10)
    out.append("</svg>")
    return "\n".join(out)


def nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) inside [lo, hi], at most ``most`` of them."""
    import math

    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    step = next(m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10) if m * 10 ** math.floor(math.log10(raw)) >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def forest_svg(title: str, rows: list[dict], xlabel: str = "difference (points)", width: int = 760) -> str:
    """One line per row: ``diff`` with its interval [``lo``, ``hi``] (points), coloured by ``verdict``
    (better / worse / no difference shown); a zero line."""
    left, top, row_h, right = 170, 30, 18, 150
    height = top + len(rows) * row_h + 40
    lo = min([r["lo"] for r in rows] + [0.0]) - 2
    hi = max([r["hi"] for r in rows] + [0.0]) + 2
    plot_w = width - left - right
    x = lambda v: left + plot_w * (v - lo) / (hi - lo)  # noqa: E731
    out = _svg(width, height, title)
    out.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 6}" y2="{height - 30}" stroke="#999" stroke-dasharray="4 3"/>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        colour = VERDICT_COLOUR.get(r.get("verdict", ""), "#1b6ca8")
        tip = f'{r["label"]}: {r["diff"]:+.1f} [{r["lo"]:+.1f}, {r["hi"]:+.1f}] {r.get("verdict", "")}'
        out += [_text(left - 6, y + 4, r["label"], 11, "end"),
                f'<line x1="{x(r["lo"]):.1f}" x2="{x(r["hi"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>',
                f'<circle cx="{x(r["diff"]):.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{escape(tip)}</title></circle>',
                _text(left + plot_w + 8, y + 4, f'{r["diff"]:+.1f} [{r["lo"]:+.1f}, {r["hi"]:+.1f}]', 10)]
    axis_y = height - 28
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>')
    for v in nice_ticks(lo, hi):
        out += [f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#999"/>',
                _text(x(v), axis_y + 14, f"{v:g}", 10, "middle")]
    out.append(_text(left + plot_w / 2, axis_y + 26, xlabel, 10, "middle"))
    out.append("</svg>")
    return "\n".join(out)


def lines_svg(title: str, xs: list[float], series: dict[str, list[float | None]], xlabel: str, ylabel: str,
              ymax: float = 1.0, width: int = 640, height: int = 300) -> str:
    """One line per series over the x values (a learning curve), x spaced as given (not to scale)."""
    left, top, bottom, right = 44, 28, 44, 170
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(xs) - 1, 1)
    out = _svg(width, height, title)
    out += _y_grid(left, top, plot_w, plot_h, ymax)
    for i, xv in enumerate(xs):
        out.append(_text(left + i * step, top + plot_h + 14, f"{xv:g}", 10, "middle"))
    for s, (name, ys) in enumerate(series.items()):
        pts = [(left + i * step, top + plot_h * (1 - min(max(v / ymax, 0), 1))) for i, v in enumerate(ys) if v is not None]
        colour = PALETTE[s % len(PALETTE)]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in pts]
    out += [_text(left + plot_w / 2, top + plot_h + 30, xlabel, 10, "middle"), _text(4, top + plot_h + 40, ylabel, 10)]
    out += _legend(list(series), left + plot_w + 12, top + 10)
    out.append("</svg>")
    return "\n".join(out)


def _heat(v: float) -> str:
    """White (0) to dark blue (1)."""
    v = min(max(v, 0.0), 1.0)
    r, g, b = (int(255 + (t - 255) * v) for t in (16, 70, 140))
    return f"rgb({r},{g},{b})"


def heatmap_svg(title: str, rows: list[str], cols: list[str], values: list[list[float | None]],
                marked: set[tuple[int, int]] = frozenset(), row_title: str = "source", col_title: str = "target",
                cell: int = 36) -> str:
    """A rows x cols matrix of fractions in [0, 1], each cell printed; ``marked`` cells get a black frame."""
    left, top = 64, 48
    width, height = left + cell * len(cols) + 20, top + cell * len(rows) + 30
    out = _svg(width, height, title)
    out.append(_text(left + cell * len(cols) / 2, 34, f"{col_title} →", 11, "middle"))
    for j, c in enumerate(cols):
        out.append(_text(left + (j + 0.5) * cell, top - 2, c, 10, "middle"))
    for i, r in enumerate(rows):
        out.append(_text(left - 6, top + (i + 0.6) * cell, r, 10, "end"))
        for j, v in enumerate(values[i]):
            x, y = left + j * cell, top + i * cell
            if v is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="#f4f4f4" stroke="#fff"/>')
                continue
            frame = ' stroke="#000" stroke-width="2"' if (i, j) in marked else ' stroke="#fff"'
            ink = "#fff" if v > 0.55 else "#000"
            out += [f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_heat(v)}"{frame}>'
                    f'<title>{escape(f"{row_title} {r} -> {col_title} {cols[j]}: {v:.3f}")}</title></rect>',
                    _text(x + cell / 2, y + cell * 0.6, f"{100 * v:.0f}", 10, "middle", f'fill="{ink}"')]
    out.append(_text(4, height - 8, f"↓ {row_title}; cells: percent", 10))
    out.append("</svg>")
    return "\n".join(out)


def scatter_svg(title: str, points: list[dict], xline: float, yline: float, xlabel: str, ylabel: str,
                width: int = 860, height: int = 380) -> str:
    """Points ``{x, y, label, ok}`` (percent), dashed threshold lines at ``xline`` and ``yline``, the region
    beyond both shaded; points that meet both (``ok``) are filled, the others hollow. Each point carries
    its number, and a key on the right names it with its values (labels beside close points would overlap)."""
    left, top, bottom, key_w = 54, 28, 48, 250
    plot_w, plot_h = width - left - key_w - 20, height - top - bottom
    xs, ys = [p["x"] for p in points] + [xline], [p["y"] for p in points] + [yline]
    x0, x1 = min(xs + [0.0]) - 5, max(xs + [100.0]) + 5
    y0, y1 = min(ys) - 3, max(ys + [100.0]) + 3
    sx = lambda v: left + plot_w * (v - x0) / (x1 - x0)  # noqa: E731
    sy = lambda v: top + plot_h * (1 - (v - y0) / (y1 - y0))  # noqa: E731
    out = _svg(width, height, title)
    out.append(f'<rect x="{sx(xline):.1f}" y="{sy(y1):.1f}" width="{sx(x1) - sx(xline):.1f}" '
               f'height="{sy(yline) - sy(y1):.1f}" fill="#2a9d4b" fill-opacity="0.08"/>')
    out += [_text(sx(v), top + plot_h + 14, f"{v:g}", 10, "middle") for v in nice_ticks(x0, x1)]
    out += [_text(left - 4, sy(v) + 4, f"{v:g}", 10, "end") for v in nice_ticks(y0, y1)]
    out += [f'<line x1="{sx(xline):.1f}" x2="{sx(xline):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#c0392b" stroke-dasharray="5 4"/>',
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(yline):.1f}" y2="{sy(yline):.1f}" stroke="#c0392b" stroke-dasharray="5 4"/>',
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    key_x = left + plot_w + 20
    for i, p in enumerate(points):
        colour = PALETTE[i % len(PALETTE)]
        fill = colour if p.get("ok") else "#fff"
        out += [f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="5" fill="{fill}" stroke="{colour}" stroke-width="2">'
                f'<title>{escape(p["label"])}: x {p["x"]:.1f}, y {p["y"]:.1f}</title></circle>',
                _text(sx(p["x"]) + 6, sy(p["y"]) - 6 - 8 * (i % 2), str(i + 1), 9),
                f'<circle cx="{key_x + 5}" cy="{top + 16 * i + 5}" r="4" fill="{fill}" stroke="{colour}" stroke-width="2"/>',
                _text(key_x + 14, top + 16 * i + 9, f'{i + 1} {p["label"]} ({p["x"]:.0f}, {p["y"]:.0f})', 10)]
    out += [_text(left + plot_w / 2, top + plot_h + 32, xlabel, 11, "middle"),
            _text(12, top + plot_h / 2, ylabel, 11, "middle", f'transform="rotate(-90 12 {top + plot_h / 2:.0f})"')]
    out.append("</svg>")
    return "\n".join(out)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table_html(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, intro: str, sections: list[tuple[str, str]]) -> str:
    """A whole HTML page: ``intro`` (plain text), then (heading, HTML) sections."""
    css = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
           "text-align:right}th{background:#f4f4f4}svg{max-width:100%;height:auto;display:block;margin:.5em 0}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{css}</style>"
             f"</head><body><h1>{escape(title)}</h1><p>{escape(intro)}</p>"]
    parts += [f"<h2>{escape(h)}</h2>\n{body}" for h, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["nice_ticks", "bars_svg", "forest_svg", "lines_svg", "heatmap_svg", "scatter_svg", "table_html", "page"]
