"""Where the paired accuracy gate shows: the manifest record, the bench report's forest plot and metrics
table, and `lugha eval --baseline`'s run-vs-run comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lugha.gate_report import AccuracyGate, GateCell
from lugha.manifest import BundleManifest
from lugha.runtimes.bench_html import forest_svg, metrics_table


def _cell(candidate: str, lang: str, metric: str, lost: int, gained: int, decision: str, n: int = 149) -> GateCell:
    drop = 100 * (lost - gained) / n
    return GateCell(candidate, lang, metric, n, lost, gained, 40, 1.0, drop, drop - 1.5, drop + 2.5, 0.3, 0.9, decision,
                    3.4 if decision == "undecided" else None, 2287 if decision == "undecided" else None)


GATE = AccuracyGate("default", 0.05, 1.0, ("val", "test"), "Tango",
                    cells=(_cell("tflite/int8", "ta", "i2t_r1", 2, 0, "undecided"),
                           _cell("tflite/int8", "yo", "t2i_r1", 30, 0, "fail"),
                           _cell("onnx/int8", "ta", "i2t_r1", 0, 0, "undecided")),
                    pooled=(_cell("tflite/int8", "all", "i2t_r1", 3, 2, "pass", 2384),), overridden=True,
                    blocking=("tflite/int8 [yo] t2i_r1: ...",))


def test_the_gate_record_round_trips_through_the_manifest_schema():
    from lugha._schema import from_dict, to_dict

    data = json.loads(json.dumps(to_dict(GATE)))
    assert from_dict(AccuracyGate, data, "manifest.accuracy_gate") == GATE
    assert GATE.counts() == {"pass": 0, "undecided": 2, "fail": 1}
    assert "accuracy_gate" in {f for f in BundleManifest.__dataclass_fields__}
    with pytest.raises(Exception, match="lost 5 \\+ gained 5"):
        GateCell("c", "ha", "i2t_r1", 8, 5, 5, 0, 1.0, 0, 0, 0, 1, 1, "undecided")


def test_forest_plot_has_a_row_per_language_and_the_margin_line():
    svg = forest_svg(GATE.to_dict(), "tflite/int8")
    assert svg.startswith("<svg") and svg.count("<title>") == 3  # pooled i2t, ta i2t, yo t2i
    assert ">all</text>" in svg and ">ta</text>" in svg and ">yo</text>" in svg
    assert 'stroke-dasharray="5,4"' in svg  # the margin
    assert "lost 30, gained 0 of 149" in svg and "fail" in svg
    assert forest_svg(GATE.to_dict(), "onnx/fp16") == ""


def test_metrics_table_is_one_row_per_language_with_a_column_per_candidate():
    metrics = {"torch/fp32": {"ta": {"i2t_r1": 0.25, "t2i_r1": 0.2, "chance_i2t_r1": 0.0067, "chance_t2i_r1": 0.0067}},
               "onnx/int8": {"ta": {"i2t_r1": 0.24, "t2i_r1": 0.2}}}
    html = metrics_table(metrics)
    assert html.count("<tr>") == 2  # header + one language
    assert "<th>torch/fp32</th><th>onnx/int8</th><th>chance</th>" in html
    assert "<td>25.0 / 20.0</td><td>24.0 / 20.0</td><td>0.7 / 0.7</td>" in html


def test_compare_runs_pairs_items_by_id_and_corrects_with_holm():
    pytest.importorskip("statsmodels")
    from lugha.training.paired_stats import compare_runs

    base = {"yo": {"t2i_r1": np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1], bool)}}
    run = {"yo": {"t2i_r1": np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)[::-1]}}
    ids = [f"r{i}" for i in range(10)]
    rows = compare_runs(run, base, {"yo": {"t2i_r1": ids[::-1]}}, {"yo": {"t2i_r1": ids}})
    (row,) = rows
    assert (row["run_only"], row["baseline_only"], row["n"]) == (8, 0, 10)
    assert row["diff_points"] == pytest.approx(80.0) and row["p_value"] == pytest.approx(2 * 0.5 ** 8)
    assert row["verdict"] == "better" and row["ci_low_points"] > 0
    same = compare_runs(base, base, {"yo": {"t2i_r1": ids}}, {"yo": {"t2i_r1": ids}})
    assert same[0]["verdict"] == "no difference shown" and same[0]["p_holm"] == 1.0
