"""The experiments' plots: round axis ticks, and a forest plot whose marks sit where the numbers say."""
import re

import pytest

from lugha.training.exp_plots import forest_svg, nice_ticks


@pytest.mark.parametrize("lo, hi, want", [
    (-6.03, 45.5, [0, 10, 20, 30, 40]),
    (-2.0, 3.0, [-2, -1, 0, 1, 2, 3]),
    (0.1, 0.13, [0.1, 0.105, 0.11, 0.115, 0.12, 0.125, 0.13]),
    (-13.3, 2.1, [-10, -5, 0]),
])
def test_nice_ticks_are_round_and_inside(lo, hi, want):
    got = nice_ticks(lo, hi)
    assert got == pytest.approx(want) and lo <= min(got) and max(got) <= hi and len(got) <= 7


def test_forest_ticks_and_marks_share_one_scale():
    svg = forest_svg("gain", [{"label": "sw", "diff": 10.0, "lo": 5.0, "hi": 15.0, "verdict": "better"},
                              {"label": "en", "diff": 0.0, "lo": -4.0, "hi": 4.0, "verdict": "no difference shown"}])
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.rstrip().endswith("</svg>")
    ticks = {float(v): float(x) for x, v in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10" '
                                                        r'text-anchor="middle" >(-?[\d.]+)</text>', svg)}
    assert sorted(ticks) == [-5.0, 0.0, 5.0, 10.0, 15.0]
    per_point = (ticks[10.0] - ticks[0.0]) / 10.0
    dots = [float(cx) for cx in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert dots == pytest.approx([ticks[0.0] + 10 * per_point, ticks[0.0]], abs=0.11)
    assert "#2a9d4b" in svg and "#5f6b73" in svg  # better green, no difference grey
