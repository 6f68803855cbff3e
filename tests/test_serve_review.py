"""Feedback poisoning: session ids only the server issues, scores that are numbers, captions without
invisible bidi or zero-width characters, and a person's review before judgments become training data."""
from __future__ import annotations

import json

import pytest

from lugha.records import read_manifest
from test_serve_api import Client, field_bundle, photo, running_server  # noqa: F401 (fixture)

PIN = {"X-Lugha-Pin": "482193"}


@pytest.fixture()
def served(field_bundle, tmp_path):  # noqa: F811
    with running_server(field_bundle, tmp_path, pin="482193", rate=1000, burst=1000) as (base, app):
        yield base, app


def test_session_ids_are_issued_by_the_server(served):
    base, app = served
    chosen = "lugha_sid=" + "A" * 44  # an id a client made up (the old rule: 20-64 url-safe characters)
    c = Client(base)
    c.cookie = chosen
    cfg = c.start()
    assert c.cookie != chosen and c.cookie.startswith("lugha_sid=")  # a new, server-made id replaces it
    assert app.sessions.valid(c.cookie.split("=", 1)[1]) and not app.sessions.valid("A" * 44)
    forged = Client(base)
    forged.cookie, forged.csrf = chosen, app.csrf.token("A" * 44)  # even with a matching CSRF token
    status, _ = forged.json("POST", "/api/consent", {"agree": True, "tester_lang": "sw"})
    assert status == 403 and cfg["consent"] is None
    kept = c.cookie
    assert c.start(consent="sw")["consent"] is None and c.cookie == kept  # a valid id is kept
    assert c.json("GET", "/api/config")[1]["consent"] == "sw"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_scores_must_be_finite_numbers(served, raw):
    base, app = served
    c = Client(base)
    c.start(consent="en")
    qid = c.upload(photo(seed=7))[1]["query_id"]
    body = ('{"mode": "image", "lang": "en", "query_id": "%s", "result": "cat", "correct": true, "score": %s}'
            % (qid, raw)).encode()
    status, data, _ = c.request("POST", "/api/feedback", body, {"Content-Type": "application/json"})
    assert status == 400 and ("score" in json.loads(data)["error"] or "JSON" in json.loads(data)["error"])
    assert app.db.counts()["feedback"] == 0


def test_invisible_characters_are_stripped_from_captions(served):
    base, app = served
    c = Client(base)
    c.start(consent="sw")
    qid = c.upload(photo(seed=8), lang="sw")[1]["query_id"]
    for sent, stored in [("pa\u202eka\u202c mwe\u200busi\u2066\u2069", "paka mweusi"),
                         ("\ufeff\u200fpaka\u00ad", "paka"),
                         ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")]:
        status, out = c.json("POST", "/api/feedback", {"mode": "image", "lang": "sw", "query_id": qid, "result": "paka",
                                                       "correct": False, "better_caption": sent})
        assert status == 200
        row = next(r for r in app.db.feedback_rows() if r["id"] == out["id"])
        assert row["better_caption"] == stored  # ZWNJ (Persian spelling) is kept
    status, out = c.json("POST", "/api/feedback", {"mode": "image", "lang": "sw", "query_id": qid, "result": "paka",
                                                   "better_caption": "\u200b\u202e"})
    assert status == 400  # nothing visible left, no judgment


def test_only_reviewed_judgments_are_exported(served, tmp_path):
    from lugha.cli import main
    from lugha.runtimes.serve_feedback import export_feedback

    base, app = served
    c = Client(base)
    c.start(consent="sw")
    ids = []
    for seed, caption in [(11, "paka mweusi"), (12, "mbwa"), (13, "kuku")]:
        qid = c.upload(photo(seed=seed), lang="sw")[1]["query_id"]
        ids.append(c.json("POST", "/api/feedback", {"mode": "image", "lang": "sw", "query_id": qid, "result": "paka",
                                                    "correct": False, "better_caption": caption})[1]["id"])
    summary = export_feedback(app.db, tmp_path / "none" / "manifest.jsonl")
    assert summary["records"] == 0 and sum(summary["skipped"].values()) == 3  # nothing reviewed: nothing exported

    assert c.json("POST", "/api/admin/review-queue", headers={"X-Lugha-Pin": "0000"})[0] == 403
    status, queue = c.json("POST", "/api/admin/review-queue", headers=PIN)
    assert status == 200 and [r["id"] for r in queue["rows"]] == ids and queue["to_review"] == 3
    photo_status, data, resp = c.request("POST", f"/api/admin/photo/{queue['rows'][0]['query_image']}", headers=PIN)
    assert photo_status == 200 and resp.getheader("Content-Type").startswith("image/") and len(data) > 100
    assert c.json("POST", "/api/admin/review", {"ids": [ids[0]], "approve": True}, headers=PIN) == (200, {"updated": 1})
    assert c.json("POST", "/api/admin/review", {"ids": [ids[1]], "approve": False}, headers=PIN) == (200, {"updated": 1})
    assert c.json("POST", "/api/admin/review", {"ids": "all", "approve": True}, headers=PIN)[0] == 400
    assert c.json("POST", "/api/admin/review-queue", headers=PIN)[1]["to_review"] == 1

    reviewed = export_feedback(app.db, tmp_path / "reviewed" / "manifest.jsonl")
    assert [r.text for r in read_manifest(tmp_path / "reviewed" / "manifest.jsonl")] == ["paka mweusi"]
    assert reviewed["skipped"] == {"rejected in review": 1,
                                   "not reviewed (approve in the admin page, or export with --unreviewed)": 1}
    out = tmp_path / "all" / "manifest.jsonl"
    assert main(["feedback", "export", "--db", str(app.db.path), "--out", str(out), "--unreviewed"]) == 0
    assert sorted(r.text for r in read_manifest(out)) == ["kuku", "paka mweusi"]  # the rejected one never
