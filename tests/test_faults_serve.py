"""Issue 17, faults of the field server: a full SD card during uploads and judgments, a torn gallery cache,
gallery files that change under a running server, and a feedback export that fails half-way.

The full disk is a real one where user namespaces allow it (a small tmpfs, see tests/test_faults.py),
else RLIMIT_FSIZE fails the same writes with EFBIG; the server runs inside that child process.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from test_faults import TMPFS, run_on_small_disk
from test_serve_api import field_bundle, make_gallery, photo  # noqa: F401 (fixture)

TESTS = Path(__file__).resolve().parent

FULL_DISK_SERVER = """
import io, json, os, sys
from pathlib import Path
sys.path.insert(0, TESTS)
import numpy as np
from PIL import Image
from test_serve_api import Client, photo, running_server
from lugha.runtimes.serve_db import UploadQuota

def noise(seed):  # ~300 kB as PNG: incompressible
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (320, 320, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()

out = {"uploads": [], "classify": None, "judgments": [], "after_free": None}
root = Path(DISK)
with running_server(Path(BUNDLE), root, rate=1000, burst=1000) as (base, app):
    # the free-space check off (its refusal is tested in test_serve_quota): the writes themselves meet the full card
    app.db.quota = UploadQuota(per_session_bytes=10**12, per_session_files=10**6, total_bytes=10**12,
                               reserve_bytes=-10**15)
    c = Client(base)
    c.start(consent="sw")
    small = c.request("POST", "/api/upload", photo(seed=1), {"Content-Type": "image/png"})
    qid = json.loads(small[1])["query_id"]
    for seed in range(12):
        status, body, _ = c.request("POST", "/api/upload", noise(seed), {"Content-Type": "image/png"})
        out["uploads"].append([status, json.loads(body)])
    status, body = c.upload(noise(99), lang="sw")  # classify and keep: the labels still come back
    out["classify"] = [status, body]
    judge = {"mode": "image", "lang": "sw", "query_id": qid, "result": "paka", "correct": True}
    out["first_judgment"] = c.json("POST", "/api/feedback", judge)
    if TMPFS:  # fill what is left, to the last byte: SQLite cannot grow its log any more
        fd = os.open(root / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError:
            os.close(fd)
        for i in range(20):
            out["judgments"].append(c.json("POST", "/api/feedback", {**judge, "better_caption": f"n{i}"}))
        os.remove(root / "filler")
        out["after_free"] = c.json("POST", "/api/feedback", {**judge, "better_caption": "after"})
    out["config"] = c.request("GET", "/api/config")[0]
    rows = {r["id"]: r["better_caption"] for r in app.db.feedback_rows()}
    out["rows"] = {str(k): v for k, v in rows.items()}
    with app.db._lock:
        out["upload_rows"] = [list(r) for r in app.db._conn.execute("SELECT sha256, file FROM uploads")]
    out["files"] = {str(p.relative_to(root)): __import__("hashlib").sha256(p.read_bytes()).hexdigest()
                    for p in root.rglob("*") if p.is_file() and not p.name.startswith("feedback.sqlite")}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_uploads_on_a_full_disk_are_refused_clearly_and_the_server_keeps_serving(field_bundle, tmp_path):  # noqa: F811
    script = f"TESTS = {str(TESTS)!r}\nBUNDLE = {str(field_bundle)!r}\nTMPFS = {TMPFS!r}\n" + FULL_DISK_SERVER
    out = run_on_small_disk(script, 1_200_000 if TMPFS else 200_000, tmp_path / "card", timeout=300)

    statuses = [s for s, _ in out["uploads"]]
    assert 507 in statuses, out["uploads"]  # the card filled up (or the file-size limit was hit)
    for status, body in out["uploads"]:
        assert status == 200 or (status == 507 and "photo was not stored" in body["error"]
                                 and "/" not in body["error"]), body  # the cause, never the server's paths
    status, body = out["classify"]
    assert status == 200 and body["results"] and body["query_id"] is None and "not stored" in body["not_stored"]
    assert out["first_judgment"][0] == 200, out["first_judgment"]
    assert out["config"] == 200

    # no partial photo: every file in the uploads folder is whole (named by its hash) and has its row
    photos = {k: v for k, v in out["files"].items() if k != "filler"}
    assert all(not Path(k).name.startswith(".") and not k.endswith(".tmp") for k in photos), photos
    assert sorted(Path(k).name for k in photos) == sorted(f for _, f in out["upload_rows"])
    assert all(Path(k).stem == v for k, v in photos.items())
    assert len(photos) == 1 + statuses.count(200)

    if TMPFS:  # judgments with no room at all: saved, or refused with a sentence (never a 500)
        codes = [s for s, _ in out["judgments"]]
        assert set(codes) <= {200, 507} and 507 in codes, out["judgments"]
        for status, body in out["judgments"]:
            assert status == 200 or "judgment was not saved: the server's disk is full" in body["error"], body
        saved = {body["id"]: f"n{i}" for i, (status, body) in enumerate(out["judgments"]) if status == 200}
        assert all(out["rows"][str(i)] == c for i, c in saved.items())  # every acknowledged one is kept
        assert out["after_free"][0] == 200  # space again: judgments save again, same server


# --- the gallery cache and gallery files -----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_torn_gallery_cache_is_rebuilt_at_start_not_a_crash(field_bundle, tmp_path, damage):  # noqa: F811
    from lugha.runtimes.index import EmbeddingIndex
    from lugha.runtimes.serve_engine import FieldEngine

    gallery = make_gallery(tmp_path / "gallery")
    first = FieldEngine(field_bundle, gallery=gallery, cache_dir=tmp_path / "cache")
    [cache] = (tmp_path / "cache").iterdir()
    whole = cache.read_bytes()
    cache.write_bytes({"truncated": whole[: len(whole) // 2], "empty": b"", "garbage": os.urandom(len(whole))}[damage])

    again = FieldEngine(field_bundle, gallery=gallery, cache_dir=tmp_path / "cache")  # a power cut mid-write, then boot
    assert [it.name for it in again.gallery] == [it.name for it in first.gallery] and len(again.gallery) == 6
    assert again.search_text("paka", "sw")[0]["name"] == first.search_text("paka", "sw")[0]["name"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.name]  # rebuilt in place, no temp left
    assert len(EmbeddingIndex.load(cache)) == 6


def test_the_gallery_cache_is_written_with_a_unique_temp_name_and_fsynced(field_bundle, tmp_path, monkeypatch):  # noqa: F811
    from lugha.runtimes.serve_engine import FieldEngine

    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append(Path(a).name) or real_replace(a, b))
    FieldEngine(field_bundle, gallery=make_gallery(tmp_path / "gallery"), cache_dir=tmp_path / "cache")
    assert False in synced and True in synced  # the file's bytes, then the folder's entry
    assert len(renamed) == 1 and renamed[0].startswith(".gallery-") and renamed[0].endswith(".tmp")
    assert str(os.getpid()) in renamed[0]  # never a fixed name two servers (or a dead one) could share


def test_thumbnails_decode_only_listed_formats_and_a_changed_file_is_a_404(field_bundle, tmp_path, monkeypatch):  # noqa: F811
    from PIL import EpsImagePlugin

    from lugha.runtimes.serve_engine import FieldEngine

    asked = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: asked.append(1) or (_ for _ in ()).throw(
        SyntaxError("EPS plugin reached")))
    gallery = make_gallery(tmp_path / "gallery")
    engine = FieldEngine(field_bundle, gallery=gallery, cache_dir=tmp_path / "cache")
    assert engine.thumbnail(1)[:2] == b"\xff\xd8"  # a JPEG
    # after indexing, img0.png is replaced by PostScript (the operator's card, or whoever had it)
    (gallery / "img0.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert engine.thumbnail(0) is None and not asked
    (gallery / "img2.png").unlink()
    os.mkfifo(gallery / "img2.png")  # a FIFO would block an open() for ever
    assert engine.thumbnail(2) is None


def _open_writer_end(fifo: Path) -> None:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a blocked reader then reads EOF
    except OSError:  # no reader: nothing is stuck
        pass


def test_a_fifo_in_the_gallery_is_skipped_not_a_hang(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_engine import FieldEngine

    gallery = make_gallery(tmp_path / "gallery", n=2)
    os.mkfifo(gallery / "pipe.jpg")
    unblock = threading.Timer(30, _open_writer_end, [gallery / "pipe.jpg"])  # a reader stuck on it fails, not hangs
    unblock.start()
    try:
        engine = FieldEngine(field_bundle, gallery=gallery, cache_dir=tmp_path / "cache")
    finally:
        unblock.cancel()
    assert len(engine.gallery) == 2 and engine.skipped == ["pipe.jpg: not a regular file (a device, FIFO or socket); "
                                                           "refused"]


# --- feedback export ------------------------------------------------------------------------------------

def test_feedback_export_that_fails_mid_copy_leaves_no_torn_image(tmp_path, monkeypatch):
    """A disk that fills (or a kill) half-way through an image copy: the next export must not find a
    half image under the final name and keep it as if it were whole."""
    from lugha.runtimes.serve_feedback import export_feedback
    from test_serve_db import _filled_db

    (tmp_path / "img0.png").write_bytes(photo(seed=2))
    db = _filled_db(tmp_path / "f.sqlite", tmp_path / "img0.png")
    db.set_review([r["id"] for r in db.review_queue()], approve=True)
    real_copy = shutil.copyfile

    def half_then_full(src, dst, *a, **k):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", half_then_full)
    out = tmp_path / "out" / "manifest.jsonl"
    with pytest.raises(OSError) as failed:
        export_feedback(db, out)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no torn image, no temp file
    assert "no space left on the device" in str(failed.value)  # lugha.atomic's DiskFullError, naming the file
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    summary = export_feedback(db, out)
    assert summary["records"] == 3
    for p in (tmp_path / "out" / "feedback_images").iterdir():  # each copy whole: its name is its content's hash
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
    db.close()
