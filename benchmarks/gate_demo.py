"""The paired accuracy gate on the demo: what it decided for each exported candidate, from a bundle.

    lugha export RUN --out BUNDLE --formats onnx,tflite --precision fp32,int8       # --gate default
    python benchmarks/gate_demo.py --bundle BUNDLE --out benchmarks/gate_demo.json

Reads the bundle's ``manifest.json`` (``accuracy_gate``: every cell the export decided) and writes, per
candidate: the pooled cells, how many per-language cells passed / stayed undecided / failed, the worst
cell, and the TFLite int8 i2t Tamil cell (the one cell over 1.0 point in the README's int8 image tower
benchmark: 2 of 149 test images); each pooled cell also with ``per_item_ci_points``, Tango's interval
of its counts (what it would be were the items independent). ``--readme-cell`` also puts that
benchmark's cell through the same statistics: its JSON keeps the net drop only, so the cell is taken at
its fewest flips (2 lost, 0 gained), which gives it the narrowest interval it can have.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cell_view(c: dict) -> dict:
    keys = ("candidate", "lang", "metric", "n", "lost", "gained", "drop_points", "ci_low_points", "ci_high_points",
            "p_value", "p_holm", "decision", "detectable_points", "decide_n", "clusters")
    return {k: (round(c[k], 4) if isinstance(c.get(k), float) else c.get(k)) for k in keys}


def pooled_view(c: dict, alpha: float) -> dict:
    """A pooled cell, with the interval its counts would get were its items independent (Tango's, the
    per-item floor of the clustered cell): how much counting images instead of items widened it."""
    from lugha.training.paired_stats import tango_interval

    lo, hi = tango_interval(c["lost"], c["gained"], c["n"], 1.0 - 2.0 * alpha)
    return {**cell_view(c), "per_item_ci_points": [round(100.0 * lo, 4), round(100.0 * hi, 4)]}


def summarise(gate: dict) -> dict:
    out = {"policy": gate["policy"], "max_drop_points": gate["max_drop_points"], "splits": gate["splits"],
           "alpha": gate["alpha"], "method": gate["method"], "overridden": gate["overridden"],
           "cells": len(gate["cells"]) + len(gate["pooled"]), "candidates": {}}
    for cand in dict.fromkeys(c["candidate"] for c in gate["pooled"]):
        mine = [c for c in gate["cells"] if c["candidate"] == cand]
        out["candidates"][cand] = {
            "pooled": [pooled_view(c, gate["alpha"]) for c in gate["pooled"] if c["candidate"] == cand],
            "per_language": {d: sum(c["decision"] == d for c in mine) for d in ("pass", "undecided", "fail")},
            "worst": cell_view(max(mine, key=lambda c: c["drop_points"])) if mine else None}
    ta = [c for c in gate["cells"] if (c["candidate"], c["lang"], c["metric"]) == ("tflite/int8", "ta", "i2t_r1")]
    out["tflite_int8_i2t_ta"] = cell_view(ta[0]) if ta else None
    return out


def readme_cell(margin: float) -> dict:
    """The int8 image tower benchmark's TFLite i2t ta cell (net 2 of 149 test images), at its fewest flips."""
    from lugha.training import paired_stats as ps

    ref = [True] * 2 + [False] * 147
    got = [False] * 149
    cell = ps.decide([ps.make_cell("tflite/int8 image graph", "ta", "i2t_r1", ref, got, margin)])[0]
    return {**cell_view(cell.to_dict()), "source": "benchmarks/int8_image_tower_default.json (net 2 of 149, "
            "taken as 2 lost and 0 gained: its JSON keeps net drops only); alone, no Holm family"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="a bundle exported with the paired gate")
    p.add_argument("--out", default="benchmarks/gate_demo.json")
    p.add_argument("--readme-cell", action="store_true", help="also the int8 image tower benchmark's ta cell")
    args = p.parse_args(argv)
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text(encoding="utf-8"))
    gate = manifest.get("accuracy_gate")
    if not gate:
        print(f"{args.bundle}: no accuracy_gate in manifest.json (exported before the paired gate?)", file=sys.stderr)
        return 1
    out = {"bundle": str(args.bundle), "model": manifest["model"]["name"], **summarise(gate)}
    if args.readme_cell:
        out["readme_int8_image_tower_ta"] = readme_cell(gate["max_drop_points"])
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for cand, v in out["candidates"].items():
        pooled = ", ".join(f"{c['metric']} {c['decision']} ({c['drop_points']:+.2f}, CI {c['ci_low_points']:+.2f} to "
                           f"{c['ci_high_points']:+.2f})" for c in v["pooled"])
        print(f"{cand}: per language {v['per_language']}; pooled {pooled}")
    for key in ("tflite_int8_i2t_ta", "readme_int8_image_tower_ta"):
        if out.get(key):
            c = out[key]
            print(f"{key}: drop {c['drop_points']:+.2f} (90% CI {c['ci_low_points']:+.2f} to {c['ci_high_points']:+.2f}),"
                  f" p {c['p_value']:.3g}, {c['decision']}; lost {c['lost']}, gained {c['gained']} of {c['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
