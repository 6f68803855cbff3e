"""Photo storage on the Pi's SD card: quotas per tester and in total, and a reserve of free space. When
one is reached the server keeps answering (labels still come back, judgments still save) and says why
the photo was not kept."""
from __future__ import annotations

import json

from test_serve_api import Client, field_bundle, photo, running_server  # noqa: F401 (fixture)


def _upload(c: Client, seed: int) -> tuple[int, dict]:
    status, body, _ = c.request("POST", "/api/upload", photo(seed=seed), {"Content-Type": "image/png"})
    return status, json.loads(body)


def test_quotas_refuse_photos_and_the_server_keeps_serving(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_db import UploadQuota

    with running_server(field_bundle, tmp_path) as (base, app):
        app.db.quota = UploadQuota(per_session_files=2, total_bytes=10 ** 9, reserve_bytes=0)
        c = Client(base)
        c.start(consent="sw")
        first = _upload(c, 1)[1]["query_id"]
        assert _upload(c, 2)[0] == 200
        assert _upload(c, 1) == (200, {"query_id": first})  # the same photo again costs nothing
        status, out = _upload(c, 3)
        assert status == 507 and "quota" in out["error"], out
        status, out = c.upload(photo(seed=3), lang="sw")  # classifying still works; only keeping is refused
        assert status == 200 and out["results"] and out["query_id"] is None and "quota" in out["not_stored"]
        status, out = c.json("POST", "/api/feedback", {"mode": "image", "lang": "sw", "query_id": first,
                                                       "result": "paka", "correct": True})
        assert status == 200  # judgments of stored photos still save
        other = Client(base)
        other.start(consent="en")
        assert _upload(other, 4)[0] == 200  # the quota is per tester
        assert app.db.upload_usage()[0] == 3

        app.db.quota = UploadQuota(total_bytes=app.db.upload_usage()[1] + 10, reserve_bytes=0)
        status, out = _upload(other, 5)
        assert status == 507 and "store is full" in out["error"]
        app.db.quota = UploadQuota(reserve_bytes=10 ** 18)  # more free space kept than any disk has
        status, out = _upload(other, 6)
        assert status == 507 and "disk is nearly full" in out["error"]
        assert c.request("GET", "/api/config")[0] == 200
        assert app.db.upload_usage()[0] == 3 and len(list(app.db.uploads_dir.iterdir())) == 3  # nothing half-kept


def test_a_database_from_before_the_quotas_is_upgraded_in_place(tmp_path):
    import sqlite3

    from lugha.runtimes.serve_db import FeedbackDB

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)  # the schema lugha wrote before uploads.bytes and the review columns
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE consent (session TEXT PRIMARY KEY, tester_lang TEXT NOT NULL, consent_version INTEGER NOT NULL,
                              created REAL NOT NULL);
        CREATE TABLE uploads (sha256 TEXT PRIMARY KEY, file TEXT NOT NULL, width INTEGER, height INTEGER, session TEXT,
                              created REAL NOT NULL);
        CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, session TEXT NOT NULL,
            tester_lang TEXT NOT NULL, mode TEXT NOT NULL, lang TEXT NOT NULL, query_text TEXT, query_image TEXT,
            result TEXT NOT NULL, result_image TEXT, rank INTEGER, score REAL, correct INTEGER, appropriate INTEGER,
            better_caption TEXT, model TEXT, precision TEXT, backend TEXT, on_phone INTEGER NOT NULL DEFAULT 0);
        INSERT INTO consent VALUES ('s1', 'sw', 1, 0);
        INSERT INTO uploads VALUES ('ab', 'ab.png', 1, 1, 's1', 0);
        INSERT INTO feedback (created, session, tester_lang, mode, lang, result, better_caption)
            VALUES (0, 's1', 'sw', 'image', 'sw', 'paka', 'paka mweusi');
    """)
    conn.close()
    (tmp_path / "old.uploads").mkdir()
    (tmp_path / "old.uploads" / "ab.png").write_bytes(b"x" * 1234)
    with FeedbackDB(path) as db:
        assert db.upload_usage("s1") == (1, 1234)  # counted at its size on disk
        assert [r["id"] for r in db.review_queue()] == [1] and db.set_review([1], True) == 1
        assert next(db.feedback_rows())["review"] == 1
