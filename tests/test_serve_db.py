"""The feedback store: nothing acknowledged is lost when the server is killed mid-write (a real
``kill -9`` of a real ``lugha serve``), and judgments become a dataset and a human-vs-automatic report."""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lugha.records import read_manifest
from lugha.runtimes.serve_db import FeedbackDB
from test_serve_api import field_bundle, photo  # noqa: F401 (fixture)


# --- crash safety ----------------------------------------------------------------------------------

def _start_server(bundle: Path, db: Path, home: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LUGHA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lugha.cli", "serve", str(bundle), "--port", "0", "--db", str(db),
                             "--quiet", "--rate-limit", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"listening on (http://[^/]+)/", line)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")


def _session(base: str) -> tuple[str, str, str]:
    host = base.split("//")[1]
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/api/config", headers={"Host": host})
    resp = conn.getresponse()
    cookie, csrf = resp.getheader("Set-Cookie").split(";")[0], json.loads(resp.read())["csrf"]
    h = {"Host": host, "Cookie": cookie, "X-CSRF-Token": csrf, "Origin": base}
    conn.request("POST", "/api/consent", json.dumps({"agree": True, "tester_lang": "sw"}),
                 {**h, "Content-Type": "application/json"})
    assert conn.getresponse().read() and True
    conn.request("POST", "/api/image?lang=sw", photo(), {**h, "Content-Type": "image/png"})
    qid = json.loads(conn.getresponse().read())["query_id"]
    conn.close()
    return cookie, csrf, qid


@pytest.mark.slow
def test_kill_9_mid_write_loses_no_acknowledged_feedback(field_bundle, tmp_path):  # noqa: F811
    db_path, acked = tmp_path / "field.sqlite", {}
    lock = threading.Lock()
    for round_no in range(3):
        proc, base = _start_server(field_bundle, db_path, tmp_path / "home")
        cookie, csrf, qid = _session(base)
        host = base.split("//")[1]
        stop = threading.Event()

        def writer(w: int) -> None:
            conn = http.client.HTTPConnection(host, timeout=10)
            i = 0
            while not stop.is_set():
                caption = f"r{round_no} w{w} n{i}"
                body = json.dumps({"mode": "image", "lang": "sw", "query_id": qid, "result": "paka", "rank": 1,
                                   "correct": i % 2 == 0, "better_caption": caption})
                try:
                    conn.request("POST", "/api/feedback", body, {"Host": host, "Cookie": cookie, "X-CSRF-Token": csrf,
                                                                  "Origin": base, "Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    return  # the server is gone: this write was never acknowledged
                if resp.status == 200:
                    with lock:
                        acked[json.loads(data)["id"]] = caption
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(20)]  # 20 phones posting at once
        for t in threads:
            t.start()
        target = 40 * (round_no + 1)
        deadline = time.monotonic() + 60
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: the writers are still sending
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(acked) >= target, f"round {round_no}: only {len(acked)} acknowledgements"
        with FeedbackDB.open_existing(db_path) as db:
            rows = {r["id"]: r["better_caption"] for r in db.feedback_rows()}
        missing = {i: c for i, c in acked.items() if rows.get(i) != c}
        assert not missing, f"round {round_no}: {len(missing)} acknowledged rows lost, e.g. {list(missing.items())[:3]}"
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        proc.stdout.close()  # type: ignore[union-attr]


def test_db_pragmas_and_schema(tmp_path):
    with FeedbackDB(tmp_path / "a.sqlite") as db:
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with pytest.raises(Exception, match="unknown field"):
            db.add_feedback(session="s", nonsense=1)
        with pytest.raises(Exception, match="rejected by the database"):  # no consent row: foreign key
            db.add_feedback(session="nobody", tester_lang="en", mode="image", lang="en", result="x")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(Exception, match="not a feedback database"):
        FeedbackDB(tmp_path / "junk.sqlite")
    with pytest.raises(Exception, match="no feedback database"):
        FeedbackDB.open_existing(tmp_path / "missing.sqlite")


# --- export and report -----------------------------------------------------------------------------

def _filled_db(path: Path, gallery_image: Path) -> FeedbackDB:
    db = FeedbackDB(path)
    db.record_consent("s1", "sw")
    db.record_consent("s2", "ha")
    sha = db.save_upload("s1", photo(seed=1), "png", 37, 23)
    common = {"model": "test-tiny", "precision": "int8", "backend": "onnxruntime"}
    img = {"mode": "image", "query_image": sha, **common}
    db.add_feedback(session="s1", tester_lang="sw", lang="sw", result="paka", rank=1, correct=1, appropriate=1, **img)
    db.add_feedback(session="s1", tester_lang="sw", lang="sw", result="mbwa", rank=2, correct=0,
                    better_caption="paka mweusi", **img)
    db.add_feedback(session="s2", tester_lang="ha", lang="sw", result="ndege", rank=1, correct=0, **img)
    db.add_feedback(session="s2", tester_lang="ha", lang="sw", result="paka", rank=1, correct=1, appropriate=0, **img)
    db.add_feedback(session="s1", tester_lang="sw", lang="sw", mode="text", query_text="mbwa mkubwa", result="img0.png",
                    result_image=str(gallery_image), rank=1, correct=1, **common)
    db.add_feedback(session="s1", tester_lang="sw", lang="sw", mode="text", query_text="mbwa mkubwa", result="img0.png",
                    result_image=str(gallery_image), rank=1, correct=1, **common)  # the same pair twice
    db.add_feedback(session="s2", tester_lang="ha", lang="en", mode="text", query_text="dog", result="img0.png",
                    result_image=str(gallery_image), rank=1, correct=0, **common)
    return db


def test_export_turns_judgments_into_records(tmp_path):
    from lugha.runtimes.serve_feedback import export_feedback

    gallery_image = tmp_path / "img0.png"
    gallery_image.write_bytes(photo(seed=2))
    db = _filled_db(tmp_path / "f.sqlite", gallery_image)
    assert db.set_review([r["id"] for r in db.review_queue()], approve=True) == 4  # the 4 that yield pairs
    summary = export_feedback(db, tmp_path / "out" / "manifest.jsonl")
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    got = sorted((r.meta["kind"], r.text, r.lang, r.meta["mode"]) for r in records)
    assert got == [("confirmed", "mbwa mkubwa", "sw", "text"), ("confirmed", "paka", "sw", "image"),
                   ("corrected", "paka mweusi", "sw", "image")]
    assert summary["records"] == 3 and summary["corrected"] == 1 and summary["confirmed"] == 2
    assert summary["skipped"] == {"judged wrong, no better caption": 2, "judged inappropriate, no better caption": 1,
                                  "duplicate pair": 1}
    for r in records:
        path = r.image_path(tmp_path / "out")
        assert path.is_file() and r.group == path.name and not Path(r.image).is_absolute()
    photo_rows = [r for r in records if r.meta["mode"] == "image"]
    assert {r.image for r in photo_rows} == {photo_rows[0].image}  # one photo, one group: never split apart
    assert next(r for r in records if r.meta["kind"] == "confirmed" and r.meta["mode"] == "image").label == "paka"
    # the manifest is a lugha dataset: the split step keeps each photo's pairs together
    from lugha.data.split import assign_splits

    split = list(assign_splits(records))
    assert len({r.split for r in split if r.meta["mode"] == "image"}) == 1 and all(r.split for r in split)


def test_report_compares_human_and_automatic(tmp_path, field_bundle):  # noqa: F811
    from lugha.manifest import load_bundle_manifest
    from lugha.runtimes.serve_feedback import feedback_report

    gallery_image = tmp_path / "img0.png"
    gallery_image.write_bytes(photo(seed=2))
    db = _filled_db(tmp_path / "f.sqlite", gallery_image)
    manifest = load_bundle_manifest(field_bundle, verify=False).replace(
        metrics={"onnx/int8": {"sw": {"label_acc": 0.75, "t2i_r1": 0.25}, "en": {"t2i_r1": 0.5}}})
    report = feedback_report(db, manifest, "int8")
    rows = {(r["lang"], r["mode"]): r for r in report["rows"]}
    assert report["metrics_from"] == "onnx/int8" and report["total"] == 7
    sw_img = rows[("sw", "image")]
    # rank-1 judgments: paka correct, ndege wrong, paka correct -> 2/3; all judged: 2 of 4
    assert sw_img["human_top1"] == pytest.approx(2 / 3, abs=1e-4) and sw_img["judged_correct"] == 0.5
    assert sw_img["auto_metric"] == "label_acc" and sw_img["gap"] == pytest.approx(2 / 3 - 0.75, abs=1e-4)
    assert sw_img["testers"] == 2 and sw_img["appropriate"] == 0.5 and sw_img["better_captions"] == 1
    assert rows[("sw", "text")]["human_top1"] == 1.0 and rows[("sw", "text")]["gap"] == 0.75
    assert rows[("en", "text")]["human_top1"] == 0.0 and rows[("en", "text")]["gap"] == -0.5
    plain = feedback_report(db)  # no bundle: human numbers only
    assert all(r["auto"] is None and r["gap"] is None for r in plain["rows"])


def _cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lugha feedback")
    module.configure(parser)
    args = parser.parse_args(argv)
    return args._run(args)


def test_feedback_cli(tmp_path, field_bundle, capsys):  # noqa: F811
    from lugha.cli import feedback

    gallery_image = tmp_path / "img0.png"
    gallery_image.write_bytes(photo(seed=2))
    _filled_db(tmp_path / "f.sqlite", gallery_image).close()
    assert _cli(feedback, ["export", "--db", str(tmp_path / "f.sqlite"), "--out", str(tmp_path / "ds" / "m.jsonl"),
                           "--unreviewed"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 records" in out and "1 duplicate pair" in out
    assert _cli(feedback, ["report", "--db", str(tmp_path / "f.sqlite"), "--bundle", str(field_bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics_from"] == "int8" and {r["lang"] for r in report["rows"]} == {"sw", "en"}
    assert next(r for r in report["rows"] if (r["lang"], r["mode"]) == ("sw", "image"))["auto_metric"] == "R@1"
    assert _cli(feedback, ["report", "--db", str(tmp_path / "f.sqlite")]) == 0
    table = capsys.readouterr().out
    assert "| lang" in table and "human_top1" in table and "7 judgments" in table
    with pytest.raises(Exception, match="no feedback database"):
        _cli(feedback, ["report", "--db", str(tmp_path / "nope.sqlite")])
