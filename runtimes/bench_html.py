"""The benchmark report as one self-contained HTML file: inline SVG plots and tables, no script, no
network, so it opens the same on a field laptop as in CI artefacts."""
from __future__ import annotations

from html import escape

from lugha.runtimes.backends import REFERENCE_BACKEND
from lugha.vocabulary import metric_key

PALETTE = ["#1b6ca8", "#e07a1f", "#2a9d4b", "#c0392b", "#7d4fb0", "#8c6d31", "#d6579b", "#5f6b73", "#17a2b8", "#a6a13a"]
PREFERRED_METRICS = ("mean_r1", "R@1", "t2i_r1", "i2t_r1", "label_acc", "acc", "accuracy", "top1")


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def latency_svg(rows: list[dict], graph: str, width: int = 720) -> str:
    """Horizontal bars: p50 latency at the smallest batch per backend/precision, a tick at p90."""
    batch = min((r["batch"] for r in rows if r["graph"] == graph), default=None)
    bars = [r for r in rows if r["graph"] == graph and r["batch"] == batch]
    if not bars:
        return ""
    left, bar_h, gap, top = 190, 22, 8, 28
    height = top + len(bars) * (bar_h + gap) + 30
    vmax = max(r["p90_ms"] for r in bars) * 1.25 or 1.0
    scale = (width - left - 200) / vmax  # room on the right for the value labels
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(graph)} latency">',
           f'<text x="4" y="18" font-size="14" font-weight="bold">{escape(graph)}: latency at batch {batch} '
           f'(bar p50, tick p90; ms)</text>']
    for i, r in enumerate(bars):
        y = top + i * (bar_h + gap)
        colour = "#5f6b73" if r["backend"] == REFERENCE_BACKEND else PALETTE[i % len(PALETTE)]
        label = f"{r['backend']} {r['precision']}"
        ratio = f" ({r['vs_torch']:.2g}x torch)" if r.get("vs_torch") else ""
        w50, w90 = r["p50_ms"] * scale, r["p90_ms"] * scale
        out += [f'<text x="{left - 6}" y="{y + bar_h * 0.7:.1f}" font-size="12" text-anchor="end">{escape(label)}</text>',
                f'<rect x="{left}" y="{y}" width="{max(w50, 1):.1f}" height="{bar_h}" fill="{colour}"/>',
                f'<line x1="{left + w90:.1f}" x2="{left + w90:.1f}" y1="{y + 3}" y2="{y + bar_h - 3}" '
                f'stroke="#222" stroke-width="2"/>',
                f'<text x="{left + w90 + 6:.1f}" y="{y + bar_h * 0.7:.1f}" font-size="12">'
                f'{r["p50_ms"]:.3g} ms{escape(ratio)}</text>']
    axis_y = top + len(bars) * (bar_h + gap) + 4
    out.append(f'<line x1="{left}" x2="{left + vmax * scale:.1f}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>')
    for k in range(5):
        v = vmax * k / 4
        x = left + v * scale
        out.append(f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="10" text-anchor="middle">{v:.3g}</text>')
    out.append("</svg>")
    return "\n".join(out)


def pick_metric(metrics: dict) -> str | None:
    names = sorted({k for by_lang in metrics.values() for vals in by_lang.values() for k in vals})
    for want in PREFERRED_METRICS:
        if want in names:
            return want
    return names[0] if names else None


def candidate_sizes(report: dict) -> dict[str, float]:
    """MB of the graphs per metrics key: ``format/precision`` (what the exporter writes) and bare
    ``precision`` (ONNX files when the bundle has them, else TFLite). ``torch/fp32`` has no file."""
    by: dict[str, float] = {}
    for path, size in report["sizes"].items():
        parts = path.split("/")[-1].split(".")
        if path.startswith("graphs/") and len(parts) >= 3:
            key = metric_key(parts[-1], parts[-2])
            by[key] = by.get(key, 0.0) + size / 1e6
    out = dict(by)
    for key, mb in sorted(by.items(), key=lambda kv: not kv[0].startswith("onnx/")):
        out.setdefault(key.split("/")[1], mb)
    return out


def accuracy_svg(report: dict, width: int = 720, height: int = 320) -> str:
    """Size (MB) against the manifest's accuracy metric, one series per language across candidates
    (format/precision), from the exporter's accuracy gate."""
    metric = pick_metric(report.get("metrics") or {})
    sizes = candidate_sizes(report)
    points = [(lang, prec, sizes[prec], vals[metric]) for prec, by_lang in (report.get("metrics") or {}).items()
              if prec in sizes for lang, vals in by_lang.items() if metric in vals]
    if not points:
        return "<p>No accuracy metrics in the manifest (the exporter's accuracy gate writes them).</p>"
    left, right, top, bottom = 60, 110, 56, 40
    xs, ys = [p[2] for p in points], [p[3] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    pad = 0.05 * (max(ys) - min(ys) or 1)
    y0, y1 = min(ys) - pad, max(ys) + pad
    if min(ys) >= 0:  # recalls and accuracies: no negative tick under a zero score
        y0 = max(0.0, y0)
    sx = lambda v: left + (v - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda v: height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="size vs accuracy">',
           f'<text x="4" y="18" font-size="14" font-weight="bold">{escape(metric)} per language vs graph size '
           f'(MB) per format/precision</text>',
           f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}" stroke="#999"/>',
           f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#999"/>']
    for k in range(5):
        xv, yv = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out += [f'<text x="{sx(xv):.1f}" y="{height - bottom + 16}" font-size="10" text-anchor="middle">{xv:.3g}</text>',
                f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>']
    # One label per candidate, on a dashed guide, in two staggered rows: languages often share a value.
    for i, (prec, x) in enumerate(sorted({(p[1], p[2]) for p in points}, key=lambda c: c[1])):
        y_label = top - 22 + 12 * (i % 2)  # above the plot area, clear of the points
        out += [f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{y_label + 2}" y2="{height - bottom}" stroke="#ccc" '
                f'stroke-dasharray="3,3"/>',
                f'<text x="{sx(x):.1f}" y="{y_label}" font-size="10" text-anchor="middle">{escape(prec)}</text>']
    for i, lang in enumerate(sorted({p[0] for p in points})):
        colour = PALETTE[i % len(PALETTE)]
        series = sorted((p for p in points if p[0] == lang), key=lambda p: p[2])
        if len(series) > 1:
            path = " ".join(f"{sx(p[2]):.1f},{sy(p[3]):.1f}" for p in series)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for _, prec, x, y in series:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}">'
                       f'<title>{escape(lang)} {escape(prec)}: {y:.4g} at {x:.3g} MB</title></circle>')
        out.append(f'<text x="{width - right + 10}" y="{top + 14 * i + 10}" font-size="12" fill="{colour}">'
                   f'{escape(lang)}</text>')
    out.append("</svg>")
    return "\n".join(out)


METRIC_COLOURS = {"i2t_r1": "#1b6ca8", "t2i_r1": "#e07a1f", "label_acc": "#2a9d4b", "head_acc": "#7d4fb0"}


def forest_svg(gate: dict, candidate: str, width: int = 720) -> str:
    """The accuracy gate of one exported candidate (format/precision): one band per language (pooled
    first), in it one line per metric: the drop in points with its 90 % interval, the margin as a dashed
    line, zero as a grey one. A filled dot is a pass, a hollow one undecided, a red cross a fail."""
    cells = [c for c in (gate.get("pooled") or []) + (gate.get("cells") or []) if c["candidate"] == candidate]
    if not cells:
        return ""
    langs = list(dict.fromkeys(c["lang"] for c in cells))
    metrics = list(dict.fromkeys(c["metric"] for c in cells))
    margin = float(gate.get("max_drop_points", 0.0))
    lo = min([c["ci_low_points"] for c in cells] + [0.0, -margin])
    hi = max([c["ci_high_points"] for c in cells] + [margin * 1.5, 1.0])
    left, right, top, row_h, sub = 70, 20, 40, 8 + 7 * len(metrics), 7
    height = top + len(langs) * row_h + 30
    sx = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(candidate)} accuracy gate">',
           f'<text x="4" y="16" font-size="14" font-weight="bold">{escape(candidate)}: drop vs PyTorch fp32 '
           f'(points, 90% CI); margin {margin:g}</text>']
    out += [f'<text x="{left + 140 + 80 * i}" y="32" font-size="11" fill="{METRIC_COLOURS.get(m, "#555")}">'
            f'{escape(m)}</text>' for i, m in enumerate(metrics)]
    bottom = top + len(langs) * row_h
    for value, style in ((0.0, 'stroke="#999"'), (margin, 'stroke="#c0392b" stroke-dasharray="5,4"')):
        out.append(f'<line x1="{sx(value):.1f}" x2="{sx(value):.1f}" y1="{top - 4}" y2="{bottom}" {style}/>')
    by = {(c["lang"], c["metric"]): c for c in cells}
    for i, lang in enumerate(langs):
        y0 = top + i * row_h
        if i % 2:
            out.append(f'<rect x="0" y="{y0}" width="{width}" height="{row_h}" fill="#f6f6f6"/>')
        weight = ' font-weight="bold"' if lang == "all" else ""
        out.append(f'<text x="{left - 8}" y="{y0 + row_h / 2 + 4:.1f}" font-size="12" text-anchor="end"{weight}>'
                   f'{escape(lang)}</text>')
        for j, metric in enumerate(metrics):
            c = by.get((lang, metric))
            if c is None:
                continue
            y, colour = y0 + 6 + j * sub, METRIC_COLOURS.get(metric, "#555")
            out.append(f'<g><title>{escape(_cell_title(c))}</title>'
                       f'<line x1="{sx(c["ci_low_points"]):.1f}" x2="{sx(c["ci_high_points"]):.1f}" y1="{y}" '
                       f'y2="{y}" stroke="{colour}" stroke-width="2"/>{_marker(sx(c["drop_points"]), y, c, colour)}</g>')
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<text x="{sx(v):.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle">{v:.2g}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _marker(x: float, y: float, cell: dict, colour: str) -> str:
    if cell["decision"] == "fail":
        return (f'<path d="M{x - 4:.1f},{y - 4} L{x + 4:.1f},{y + 4} M{x - 4:.1f},{y + 4} L{x + 4:.1f},{y - 4}" '
                f'stroke="#c0392b" stroke-width="2.5"/>')
    fill = colour if cell["decision"] == "pass" else "white"
    return f'<circle cx="{x:.1f}" cy="{y}" r="3.5" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'


def _cell_title(c: dict) -> str:
    return (f"{c['lang']} {c['metric']}: drop {c['drop_points']:+.2f} points (90% CI {c['ci_low_points']:+.2f} to "
            f"{c['ci_high_points']:+.2f}), p {c['p_value']:.3g} (Holm {c['p_holm']:.3g}), {c['decision']}; "
            f"lost {c['lost']}, gained {c['gained']} of {c['n']}")


GATE_METRICS = ("i2t_r1", "t2i_r1", "label_acc", "head_acc")


def metrics_table(metrics: dict) -> str:
    """One row per language, a column per candidate (format/precision) holding its gated metrics in
    percent, and the chance levels once (from the first candidate)."""
    if not metrics:
        return ""
    candidates = list(metrics)
    langs = sorted({lang for per in metrics.values() for lang in per})
    shown = [m for m in GATE_METRICS if any(m in v for per in metrics.values() for v in per.values())]
    chance = [m for m in shown if any(f"chance_{m}" in v for per in metrics.values() for v in per.values())]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows = []
    for lang in langs:
        row = {"lang": lang}
        for cand in candidates:
            vals = metrics[cand].get(lang, {})
            row[cand] = " / ".join(pct(vals.get(m)) for m in shown)
        first = metrics[candidates[0]].get(lang, {})
        row["chance"] = " / ".join(pct(first.get(f"chance_{m}")) for m in chance)
        rows.append(row)
    return (f'<p class="meta">Per language, in %: {escape(" / ".join(shown))}; chance: {escape(" / ".join(chance))}.</p>'
            + _table(rows, ["lang", *candidates, "chance"]))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(f"<td>{escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def render_html(report: dict, columns: list[str]) -> str:
    graphs = sorted({r["graph"] for r in report["rows"]})
    s = report["settings"]
    m = report["machine"]
    skipped = "".join(f"<li>{escape(x['backend'])}/{escape(x['precision'] or '*')}: {escape(x['reason'])}</li>"
                      for x in report["skipped"])
    gate = report.get("accuracy_gate") or {}
    gated = list(dict.fromkeys(c["candidate"] for c in gate.get("pooled") or []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lugha bench: {escape(report['model'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f2f2f2; }} td:nth-child(-n+4) {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} .meta {{ color: #555; font-size: 14px; }}
</style></head><body>
<h1>lugha bench: {escape(report['model'])}</h1>
<p class="meta">bundle {escape(report['bundle'])} &middot; {escape(m['platform'])} ({escape(str(m['cpu_count']))} CPUs,
Python {escape(m['python'])}) &middot; threads {escape(str(s['threads']))} &middot; batches
{escape(', '.join(map(str, s['batches'])))} &middot; {s['warmup']} warm-up, {s['repeats']} repeats &middot;
bundle size {report['total_bytes'] / 1e6:.2f} MB</p>
<h2>Latency</h2>
{''.join(f'<figure>{latency_svg(report["rows"], g)}</figure>' for g in graphs)}
<h2>Size vs accuracy</h2>
<figure>{accuracy_svg(report)}</figure>
{metrics_table(report.get("metrics") or {})}
{_gate_html(gate, gated)}
<h2>All measurements</h2>
<p class="meta">vs_torch: p50 latency over PyTorch eager fp32's at the same graph and batch, measured in this run
(below 1 is faster). cold_start_s: opening the bundle in a fresh process, engine import included.</p>
{_table(report['rows'], columns)}
{f'<h2>Skipped</h2><ul>{skipped}</ul>' if skipped else ''}
</body></html>
"""


def _gate_html(gate: dict, candidates: list[str]) -> str:
    if not candidates:
        return ""
    note = (f"policy {escape(str(gate.get('policy')))}, items of {escape('+'.join(gate.get('splits', [])))}; "
            f"{escape(str(gate.get('method', '')))}" + ("; <b>overridden by --allow-drop</b>" if gate.get("overridden") else ""))
    return (f'<h2>Accuracy gate</h2>\n<p class="meta">{note}</p>\n'
            + "".join(f"<figure>{forest_svg(gate, c)}</figure>" for c in candidates))


__all__ = ["render_html", "latency_svg", "accuracy_svg", "forest_svg", "metrics_table", "pick_metric",
           "candidate_sizes"]
