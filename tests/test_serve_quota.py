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
