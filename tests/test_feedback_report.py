"""`lugha feedback report` end to end: a plan on real demo data, simulated testers writing through the
field app's own database layer (runtimes/serve_db.py, as the server does), then the report read back
from that SQLite file, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lugha.data.feedback_report import ALL, build_report, model_card_section
from lugha.data.feedback_store import read_judgments, read_scores
from lugha.data.study_plan import make_plan
from lugha.data.study_sim import expected_alpha, simulate_study
from lugha.errors import DataError
from lugha.runtimes.serve_db import FeedbackDB


def write_study(path: Path, plan: dict, rows: list[dict]) -> Path:
    """Consent, uploads and judgments through the server's own DB layer."""
    with FeedbackDB(path) as db:
        for t in plan["testers"]:
            db.record_consent(f"sim-{t['tester']}", t["tester_lang"] or "any")
        for item in plan["items"]:
            if item["mode"] == "image":
                sha = db.save_upload(f"sim-{item['testers'][0]}", Path(item["image"]).read_bytes(), "png", 64, 64)
                assert sha == item["image_sha256"]  # the plan's hash is the one the app stores the photo under
        for row in rows:
            db.add_feedback(**row, model="test-tiny", precision="int8", backend="onnxruntime")
    return path


@pytest.fixture(scope="module")
def study(demo_small, tmp_path_factory):
    plan = make_plan(demo_small, "sw=4,yo=4", 16, judges=3, split="", languages=("sw", "yo"), seed=2)
    rows, truth = simulate_study(plan, flip=0.0, accuracy={"sw": 0.8, "yo": 0.4}, inappropriate=0.2, seed=5)
    db = write_study(tmp_path_factory.mktemp("study") / "field.sqlite", plan, rows)
    return plan, rows, truth, db


def test_report_counts_what_the_testers_said(study):
    plan, rows, truth, db = study
    report = build_report(db, n_boot=100)
    assert report["totals"]["judgments"] == len(rows) == 48 and report["totals"]["items"] == 16
    assert report["totals"]["groups"] == ["sw", "yo"] and report["totals"]["items_judged_twice_or_more"] == 16
    by_lang = {r["lang"]: r for r in report["by_lang"]}
    for lang in ("sw", "yo"):
        mine = [r for r in rows if r["lang"] == lang]
        assert by_lang[lang]["correct"] == sum(r["correct"] for r in mine) and by_lang[lang]["judged"] == len(mine)
        assert by_lang[lang]["low"] <= by_lang[lang]["accuracy"] <= by_lang[lang]["high"]
    assert by_lang[ALL]["judgments"] == 48
    # native-speaker pools: the tester group is the language each tester consented as
    assert {r["group"]: r["judgments"] for r in report["by_group"]} == {"sw": 24, "yo": 24, ALL: 48}


def test_perfect_testers_agree_perfectly_and_failure_modes_are_the_true_ones(study):
    plan, rows, truth, db = study
    report = build_report(db, n_boot=100)
    alpha = {r["lang"]: r for r in report["agreement"]["correct"]["by_lang"]}
    assert alpha[ALL]["alpha"] == 1.0 and alpha[ALL]["units"] == 16 and alpha[ALL]["coders"] == 8
    # flip = 0: the items listed are exactly those truly right but inappropriate, each by all 3 judges
    want = {(t["query"], t["result"]) for t in truth.values() if t["correct"] and not t["appropriate"]}
    got = {(m["query"], m["result"]) for m in report["failure_modes"]}
    assert got == want and want and all(m["correct_but_inappropriate"] == 3 for m in report["failure_modes"])


def test_noisy_testers_agree_as_much_as_expected(demo_small, tmp_path):
    plan = make_plan(demo_small, "6", 200, judges=3, split="", languages=("en", "sw", "yo", "ha", "zu"), seed=1)
    rows, truth = simulate_study(plan, flip=0.1, accuracy=0.7, seed=3)
    report = build_report(write_study(tmp_path / "f.sqlite", plan, rows), n_boot=200)
    overall = next(r for r in report["agreement"]["correct"]["by_lang"] if r["lang"] == ALL)
    prevalence = sum(t["correct"] for t in truth.values()) / len(truth)
    want = expected_alpha(0.1, prevalence)
    assert overall["low"] <= want <= overall["high"] and overall["alpha"] == pytest.approx(want, abs=0.12)
    # the simulated score rises with the truth, so it agrees with people over all languages
    corr = next(r for r in report["correlation"] if r["lang"] == ALL)
    assert corr["items"] == 200 and corr["spearman"]["rho"] > 0.3 and corr["spearman"]["p"] < 1e-3


def test_scores_file_replaces_the_database_scores(study, tmp_path):
    plan, rows, truth, db = study
    items = build_report(db, n_boot=0)["items"]
    lines = ["mode,lang,query,result,score"]
    for it in items:  # a 0/1 "R@1 hit" score that is exactly the majority verdict
        lines.append(f"{it['mode']},{it['lang']},{it['query']},\"{it['result']}\",{int(it['share_correct'] > 0.5)}")
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = build_report(db, tmp_path / "s.csv", n_boot=50)
    assert report["totals"]["items_with_score"] == 16 and report["score_source"].endswith("s.csv")
    corr = {r["lang"]: r for r in report["correlation"]}
    assert corr[ALL]["point_biserial"]["r"] == pytest.approx(1.0)
    (tmp_path / "bad.jsonl").write_text('{"mode": "image", "lang": "sw", "query": "x", "result": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing \['score'\]"):
        read_scores(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("mode,lang,score\nimage,sw,1\n")
    with pytest.raises(DataError, match=r"header lacks \['query', 'result'\]"):
        read_scores(tmp_path / "bad.csv")


def test_reader_refuses_what_is_not_a_feedback_database(tmp_path):
    import sqlite3

    with pytest.raises(DataError, match="no feedback database"):
        read_judgments(tmp_path / "missing.sqlite")
    conn = sqlite3.connect(tmp_path / "other.sqlite")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match=r"no table\(s\) \['feedback', 'meta'\]"):
        read_judgments(tmp_path / "other.sqlite")
    with FeedbackDB(tmp_path / "v2.sqlite") as db:
        db._conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        db._conn.commit()
    with pytest.raises(DataError, match=r"feedback schema 2, this report reads \[1\]"):
        read_judgments(tmp_path / "v2.sqlite")


def test_model_card_section_names_each_language_and_failure(study):
    report = build_report(study[3], n_boot=100)
    card = model_card_section(report)
    assert card.startswith("## Human judgment\n") and "48 judgments of 16 items by 8 testers" in card
    rows = [line for line in card.splitlines() if line.startswith("| sw ") or line.startswith("| yo ")]
    assert len(rows) == 4  # once per language table, once per tester-group table
    assert "1.00 [1.00, 1.00] (n=8)" in card  # alpha per language: perfect testers
    assert f"Failure modes: {len(report['failure_modes'])} item(s)" in card


def test_cli_writes_json_html_and_card(study, tmp_path, capsys):
    from lugha.cli import main

    db = study[3]
    rc = main(["feedback", "report", str(db), "--bootstrap", "50", "--json", str(tmp_path / "r.json"),
               "--html", str(tmp_path / "r.html"), "--model-card", str(tmp_path / "card.md")])
    out = capsys.readouterr().out
    assert rc == 0 and "Krippendorff" in out and f"wrote {tmp_path / 'r.json'}" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "lugha.feedback_report/1" and report["total"] == 48  # both tables in one JSON
    assert {r["lang"] for r in report["rows"]} == {"sw", "yo"}
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") == 3 and "judged correct per language" in html
    assert (tmp_path / "card.md").read_text() == model_card_section(report)
    assert main(["feedback", "report", "--db", str(db), "--bootstrap", "0", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["totals"]["judgments"] == 48 and printed["agreement"]["correct"]["by_lang"][0]["low"] is None
    with pytest.raises(SystemExit):
        main(["feedback", "report", str(db), "--ci", "normal"])


def test_readme_table_is_the_committed_simulation():
    """Each row of the README's Human judgment table is benchmarks/human_judgment_sim.json's."""
    repo = Path(__file__).resolve().parents[1]
    sim = json.loads((repo / "benchmarks" / "human_judgment_sim.json").read_text())
    assert sim["simulated"] is True
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Human judgment", 1)[1].split("\n## ", 1)[0]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    for r in sim["by_lang"]:
        lang = "all" if r["lang"] == ALL else r["lang"]
        truly = sim["truth"]["items_right_by_lang"].get(r["lang"], sim["truth"]["items_right"])
        row = (f"| {lang} | {pct(truly)} | {pct(r['accuracy'])} [{pct(r['low'])}, {pct(r['high'])}] | "
               f"{r['alpha']:.2f} [{r['alpha_low']:.2f}, {r['alpha_high']:.2f}] | {r['spearman']:+.2f} "
               f"[{r['spearman_low']:+.2f}, {r['spearman_high']:+.2f}], p = {r['spearman_p']:.2g} |")
        assert row in section, row
    assert f"near {sim['truth']['expected_alpha_correct']}" in section
    assert f"{sim['failure_modes']} items were judged correct but inappropriate" in section
    assert f"{sim['failure_modes_by_majority']} by a majority" in section


def test_plan_progress_counts_judges_per_planned_item(study, tmp_path, capsys):
    from lugha.cli import main

    plan, rows, truth, db = study
    done = build_report(db, n_boot=0, plan=plan)["plan_progress"]
    assert done == {"plan_items": 16, "judges_per_item": 3, "items_complete": 16, "items_short": [],
                    "items_unjudged": 0, "judgments_off_plan": 0}
    # one tester has not started yet: exactly that tester's items fall short
    late = plan["testers"][0]
    partial = write_study(tmp_path / "partial.sqlite", plan, [r for r in rows if r["session"] != f"sim-{late['tester']}"])
    progress = build_report(partial, n_boot=0, plan=plan)["plan_progress"]
    assert sorted(progress["items_short"]) == sorted(late["items"]) and progress["items_unjudged"] == 0
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["feedback", "report", str(partial), "--plan", str(tmp_path / "plan.json"), "--bootstrap", "0"]) == 0
    assert f"plan: {16 - len(late['items'])} of 16 items judged by 3+ testers" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert main(["feedback", "report", str(partial), "--plan", str(tmp_path / "bad.json")]) != 0
    assert "expected 'lugha.study_plan/1'" in capsys.readouterr().err
