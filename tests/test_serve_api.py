"""The field app's HTTP API on a real server over loopback: every bad upload kind, path traversal, CSRF,
same-origin, Host, rate limit, PIN, consent, and the happy paths. Other test_serve_* modules import the
helpers (tiny bundle, gallery, server, client) from here."""
from __future__ import annotations

import http.client
import io
import json
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_runtimes_bundle import make_tiny_bundle


# --- helpers ------------------------------------------------------------------------------------------

def photo(size=(37, 23), seed=0, fmt="PNG") -> bytes:
    """A photo-like image (gradient + noise) so resampling has something to do."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(w + h - 2, 1)], -1)
    arr = np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_gallery(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(photo((20 + 3 * i, 30), seed=100 + i))
    return folder


@pytest.fixture(scope="session")
def field_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("field") / "bundle")


@contextmanager
def running_server(bundle: Path, root: Path, gallery: Path | None = None, limits=None, **app_kwargs):
    """A real FieldServer on 127.0.0.1 (free port) in a thread; yields (base_url, app)."""
    from lugha.runtimes.serve_app import FieldApp, ServerLimits, make_server
    from lugha.runtimes.serve_db import FeedbackDB
    from lugha.runtimes.serve_engine import FieldEngine

    engine = FieldEngine(bundle, gallery=gallery, cache_dir=root / "cache")
    db = FeedbackDB(root / "feedback.sqlite")
    app = FieldApp(engine, db, quiet=True, **app_kwargs)
    server = make_server(app, "127.0.0.1", 0, limits=limits or ServerLimits())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        server.server_close()
        db.close()


class Client:
    """A browser-like client: keeps the session cookie, sends the CSRF token and its Origin."""

    def __init__(self, base: str):
        self.base = base
        self.host = base.split("//")[1]
        self.cookie, self.csrf = None, None

    def request(self, method, path, body=b"", headers=None, origin=True, csrf=True):
        conn = http.client.HTTPConnection(self.host, timeout=30)
        h = {"Host": self.host}
        if self.cookie:
            h["Cookie"] = self.cookie
        if method == "POST":
            if origin:
                h["Origin"] = self.base
            if csrf and self.csrf:
                h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        set_cookie = resp.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";")[0]
        return resp.status, data, resp

    def json(self, method, path, obj=None, **kw):
        body = json.dumps(obj).encode() if obj is not None else b""
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        status, data, _ = self.request(method, path, body, headers, **kw)
        return status, json.loads(data) if data else None

    def start(self, consent: str | None = None):
        status, cfg = self.json("GET", "/api/config")
        assert status == 200
        self.csrf = cfg["csrf"]
        if consent:
            assert self.json("POST", "/api/consent", {"agree": True, "tester_lang": consent})[0] == 200
        return cfg

    def upload(self, data: bytes, ctype="image/png", lang="en", **kw):
        status, body, _ = self.request("POST", f"/api/image?lang={lang}&k=3", data, {"Content-Type": ctype}, **kw)
        return status, json.loads(body)


@pytest.fixture(scope="module")
def server(field_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    from lugha.runtimes.serve_security import UploadPolicy

    with running_server(field_bundle, root, make_gallery(root / "gallery"), pin="4821", rate=1000, burst=1000,
                        policy=UploadPolicy(max_bytes=200_000, max_pixels=250_000)) as (base, app):
        yield base, app


# --- happy paths --------------------------------------------------------------------------------------

def test_photo_text_and_feedback_round_trip(server):
    base, app = server
    c = Client(base)
    cfg = c.start()
    assert cfg["consent"] is None and [l["code"] for l in cfg["languages"]] == ["en", "sw"]
    assert {"en", "sw", "ha"} <= set(cfg["ui_languages"])
    status, res = c.upload(photo(), lang="sw")
    assert status == 200 and res["query_id"] is None  # no consent: nothing stored
    expected = app.engine.bundle.classify(image=Image.open(io.BytesIO(photo())), lang="sw", k=3)
    assert [r["label"] for r in res["results"]] == [label for label, _ in expected]
    assert res["results"][0]["score"] == pytest.approx(expected[0][1], abs=1e-4)
    assert c.json("POST", "/api/feedback", {"mode": "image"})[0] == 403  # consent first

    assert c.json("POST", "/api/consent", {"agree": True, "tester_lang": "swa"}) == (200, {"consent": "sw"})
    status, res = c.upload(photo(), lang="sw")
    qid = res["query_id"]
    assert status == 200 and len(qid) == 64 and app.db.upload_path(qid).is_file()
    status, out = c.json("POST", "/api/feedback", {"mode": "image", "lang": "sw", "query_id": qid, "rank": 1,
                                                   "result": res["results"][0]["label"], "correct": False,
                                                   "appropriate": True, "better_caption": "  paka\u0301 mweusi "})
    assert status == 200
    row = next(r for r in app.db.feedback_rows() if r["id"] == out["id"])
    assert row["better_caption"] == "pak\u00e1 mweusi" and row["correct"] == 0 and row["tester_lang"] == "sw"

    status, found = c.json("POST", "/api/text", {"text": "paka", "lang": "sw", "k": 3})
    assert status == 200 and len(found["results"]) == 3
    top = found["results"][0]
    assert c.request("GET", top["url"])[0] == 200
    status, out = c.json("POST", "/api/feedback", {"mode": "text", "lang": "sw", "query_text": "paka",
                                                   "result": top["id"], "rank": 1, "correct": True})
    row = next(r for r in app.db.feedback_rows() if r["id"] == out["id"])
    assert row["result"] == top["name"] and Path(row["result_image"]).is_file()


def test_on_phone_photo_upload_needs_consent(server):
    base, app = server
    c = Client(base)
    cfg = c.start()
    assert cfg["phone"]["cache"].startswith("lugha-model-") and cfg["phone"]["graph"]["url"].startswith("/bundle/")
    status, body, _ = c.request("POST", "/api/upload", photo(seed=4), {"Content-Type": "image/png"})
    assert status == 403 and b"consent" in body
    c.json("POST", "/api/consent", {"agree": True, "tester_lang": "ha"})
    status, body, _ = c.request("POST", "/api/upload", photo(seed=4), {"Content-Type": "image/png"})
    qid = json.loads(body)["query_id"]
    assert status == 200 and app.db.upload_path(qid).is_file()
    stored = Image.open(app.db.upload_path(qid))
    assert stored.size == (37, 23) and not stored.getexif()  # metadata stripped
    status, out = c.json("POST", "/api/feedback", {"mode": "image", "lang": "en", "query_id": qid, "result": "dog",
                                                   "correct": True, "on_phone": True})
    row = next(r for r in app.db.feedback_rows() if r["id"] == out["id"])
    assert row["on_phone"] == 1 and row["tester_lang"] == "ha"
    status, out = c.json("POST", "/api/text", {"text": "cat", "lang": "yo"})
    assert status == 400 and "yo" in out["error"]


def test_feedback_fields_are_checked(server):
    base, app = server
    c = Client(base)
    c.start(consent="en")
    qid = c.upload(photo(seed=3))[1]["query_id"]
    ok = {"mode": "image", "lang": "en", "query_id": qid, "result": "cat", "correct": True}
    for bad, why in [({"result": "not-a-label"}, "result"), ({"query_id": "0" * 64}, "query_id"),
                     ({"lang": "yo"}, "language"), ({"correct": "yes"}, "correct"), ({"mode": "video"}, "mode"),
                     ({"correct": None}, "judgment"), ({"better_caption": "x" * 501}, "better_caption"),
                     ({"better_caption": "a\x07b"}, "better_caption")]:
        status, out = c.json("POST", "/api/feedback", {**ok, **bad})
        assert status == 400 and why in out["error"], (bad, out)
    assert c.json("POST", "/api/feedback", {"mode": "text", "lang": "en", "query_text": "x", "result": 999,
                                            "correct": True})[0] == 400
    assert c.json("POST", "/api/feedback", ok)[0] == 200


# --- bad uploads ---------------------------------------------------------------------------------------

def _sized_png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, format="PNG", optimize=True)  # compresses to a few KB
    return buf.getvalue()


def _forged_ihdr(png: bytes, w: int, h: int) -> bytes:
    """The same PNG claiming another size in its header (CRC fixed, so only the pixel check can stop it)."""
    import zlib

    ihdr = b"IHDR" + w.to_bytes(4, "big") + h.to_bytes(4, "big") + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


@pytest.mark.parametrize("kind", ["too_big", "too_many_pixels", "strip", "not_image", "truncated", "wrong_ctype",
                                  "html_as_png", "empty", "gif", "bomb_header"])
def test_bad_uploads_are_refused(server, kind):
    base, _ = server
    c = Client(base)
    c.start()
    good = photo()
    body, ctype, want = {
        "too_big": (photo((300, 300), fmt="PNG") + b"\0" * 200_000, "image/png", 413),
        "too_many_pixels": (_sized_png(600, 600), "image/png", 413),
        "strip": (_sized_png(20_000, 2), "image/png", 413),
        "not_image": (b"%PDF-1.4 hello" * 10, "image/png", 415),
        "truncated": (good[: len(good) // 2], "image/png", 400),
        "wrong_ctype": (good, "text/plain", 415),
        "html_as_png": (b"<html><script>alert(1)</script></html>", "image/png", 415),
        "empty": (b"", "image/png", 400),
        "gif": (b"GIF89a" + b"\0" * 50, "image/gif", 415),
        "bomb_header": (_forged_ihdr(good, 30000, 30000), "image/png", 413),
    }[kind]
    status, data, _ = c.request("POST", "/api/image?lang=en", body, {"Content-Type": ctype})
    assert status == want, (kind, data)
    assert "error" in json.loads(data)
    assert c.upload(good)[0] == 200  # the server is fine afterwards


def test_oversized_body_is_refused_from_its_header(server):
    base, _ = server
    c = Client(base)
    c.start()
    conn = http.client.HTTPConnection(c.host, timeout=10)
    conn.putrequest("POST", "/api/image?lang=en", skip_host=True)  # one Host header (two are refused outright)
    for k, v in {"Host": c.host, "Cookie": c.cookie, "Origin": base, "X-CSRF-Token": c.csrf,
                 "Content-Type": "image/jpeg", "Content-Length": str(50 * 1024 * 1024)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(b"\xff\xd8\xff" + b"\0" * 1000)  # the server must answer without waiting for 50 MB
    resp = conn.getresponse()
    assert resp.status == 413 and b"limit" in resp.read()


# --- paths ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static/../serve_app.py", "/static/%2e%2e/serve_app.py", "/static/..%2fserve_db.py",
                                  "/gallery/../../etc/passwd", "/gallery/-1", "/gallery/999", "/gallery/img0.png",
                                  "/bundle/manifest.json", "/bundle/../manifest.json", "/bundle/graphs/text_encoder.fp32.onnx",
                                  "/bundle/%2Fetc%2Fpasswd", "/static/vendor/.gitignore", "/etc/passwd",
                                  "/static/app.js%00.png", "//etc/passwd", "/api/labels/..%2f..%2fmanifest"])
def test_no_path_traversal(server, path):
    base, _ = server
    status, data, _ = Client(base).request("GET", path)
    assert status in (400, 404), (path, status)
    assert b"import" not in data and b"root:" not in data


def test_static_files_and_phone_graph_are_served(server):
    base, app = server
    c = Client(base)
    status, data, resp = c.request("GET", "/")
    assert status == 200 and b'capture="environment"' in data and b'accept="image/*"' in data
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
    status, data, resp = c.request("GET", "/sw.js")
    assert status == 200 and app.version.encode() in data and resp.getheader("Service-Worker-Allowed") == "/"
    graph = app.engine.phone_graph
    status, data, resp = c.request("GET", f"/bundle/{graph.file}")
    assert status == 200 and data == (app.engine.bundle.root / graph.file).read_bytes()
    assert c.request("GET", f"/bundle/{graph.file}", headers={"If-None-Match": resp.getheader("ETag")})[0] == 304
    status, data, resp = c.request("GET", "/static/app.js")
    assert status == 200 and b"import" in data and resp.getheader("Content-Type").startswith("text/javascript")
    assert c.request("GET", "/static/app.js", headers={"If-None-Match": resp.getheader("ETag")})[0] == 304
    for lang in ("en", "sw", "ha"):
        assert json.loads(c.request("GET", f"/static/i18n/{lang}.json")[1])["consent_agree"]


# --- cross-site requests --------------------------------------------------------------------------------

def test_csrf_and_same_origin(server):
    base, _ = server
    c = Client(base)
    c.start()
    png = photo()
    assert c.request("POST", "/api/image?lang=en", png, {"Content-Type": "image/png"}, csrf=False)[0] == 403
    assert c.request("POST", "/api/image?lang=en", png, {"Content-Type": "image/png", "X-CSRF-Token": "0" * 64})[0] == 403
    other = Client(base)
    other.start()
    assert c.request("POST", "/api/image?lang=en", png, {"Content-Type": "image/png", "X-CSRF-Token": other.csrf})[0] == 403
    evil = {"Content-Type": "image/png", "Origin": "http://evil.example"}
    assert c.request("POST", "/api/image?lang=en", png, evil)[0] == 403
    assert c.request("POST", "/api/image?lang=en", png, {"Content-Type": "image/png", "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert c.request("POST", "/api/image?lang=en", png, {"Content-Type": "image/png", "Referer": "http://evil.example/x"},
                     origin=False)[0] == 403
    # a cross-site HTML form: no cookie (SameSite=Strict), no custom header, another Origin
    form = Client(base)
    assert form.request("POST", "/api/consent", b"agree=true", {"Content-Type": "application/x-www-form-urlencoded",
                                                                "Origin": "http://evil.example"})[0] == 403
    assert c.upload(png)[0] == 200


def test_dns_rebinding_host_is_refused(server):
    base, _ = server
    c = Client(base)
    status, _, _ = c.request("GET", "/api/config", headers={"Host": "evil.example:" + base.rsplit(":", 1)[1]})
    assert status == 421
    assert c.request("GET", "/api/config", headers={"Host": "localhost:" + base.rsplit(":", 1)[1]})[0] == 200


# --- rate limit and PIN ----------------------------------------------------------------------------------

def test_rate_limit_per_client(field_bundle, tmp_path):
    with running_server(field_bundle, tmp_path, rate=1.0, burst=5) as (base, _):
        c = Client(base)
        codes = [c.request("GET", "/api/config")[0] for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
        status, data, resp = c.request("GET", "/api/config")
        assert status == 429 and resp.getheader("Retry-After") == "1" and b"too many requests" in data
        assert c.request("GET", "/")[0] == 200  # pages and assets are not limited


def test_pin_guards_admin_actions(server, field_bundle, tmp_path):
    base, _ = server
    c = Client(base)
    c.start()
    assert c.json("POST", "/api/admin/stats")[0] == 403
    assert c.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "0000"})[0] == 403
    status, out = c.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "4821"})
    assert status == 200 and {"feedback", "consents", "uploads"} <= set(out["counts"]) and "rows" in out["report"]
    status, data, resp = c.request("POST", "/api/admin/feedback.jsonl", headers={"X-Lugha-Pin": "4821"})
    assert status == 200 and "attachment" in resp.getheader("Content-Disposition")
    assert all(json.loads(line)["mode"] in ("image", "text") for line in data.decode().splitlines())
    assert c.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "4821"}, csrf=False)[0] == 403  # PIN + CSRF
    for _ in range(5):
        c.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "1111"})
    assert c.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "4821"})[0] == 429  # locked after 5 misses
    with running_server(field_bundle, tmp_path) as (base2, _):  # no --pin: admin is off
        c2 = Client(base2)
        c2.start()
        status, out = c2.json("POST", "/api/admin/stats", headers={"X-Lugha-Pin": "4821"})
        assert status == 403 and "--pin" in out["error"]


def test_security_units():
    from lugha.runtimes.serve_security import PinGate, RateLimiter, host_allowed

    r = RateLimiter(rate=2.0, burst=2)
    assert [r.allow("a", now=0.0), r.allow("a", now=0.0)] == [0.0, 0.0]
    assert r.allow("a", now=0.0) == pytest.approx(0.5) and r.allow("b", now=0.0) == 0.0
    assert r.allow("a", now=0.6) == 0.0
    assert RateLimiter(rate=0).allow("a") == 0.0
    g = PinGate("12345", attempts=2, window_s=10)
    g.check("x", "12345", now=0)
    assert host_allowed("192.168.4.1:8080", "192.168.4.1", 8080) and not host_allowed("evil:8080", "192.168.4.1", 8080)
    assert not host_allowed("192.168.4.1:9999", "192.168.4.1", 8080)
    assert host_allowed("[::1]:8080", "::1", 8080) and host_allowed("pi.local:80", "0.0.0.0", 80, ("pi.local",))
    assert not host_allowed("evil.example:80", "0.0.0.0", 80) and not host_allowed(None, "127.0.0.1", 80)


def test_loadtest_script_is_bounded_and_loopback_only(field_bundle, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("loadtest", Path(__file__).parents[1] / "scripts" / "loadtest.py")
    loadtest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loadtest)
    with running_server(field_bundle, tmp_path, make_gallery(tmp_path / "g"), rate=0) as (base, _):
        report = loadtest.run_load(base, clients=4, requests=24, time_cap=60, lang="sw", timeout=30)
    assert report["ok"] == 24 and report["errors"] == 0 and not report["capped"], report["error_kinds"]
    assert set(report["endpoints"]) == set(loadtest.MIX) and report["all"]["p99_ms"] >= report["all"]["p50_ms"] > 0
    for url in ("http://10.0.0.5:8080", "http://example.com", "https://127.0.0.1:8080"):
        with pytest.raises(SystemExit, match="loopback"):
            loadtest.run_load(url, clients=1, requests=1, time_cap=1, lang="sw", timeout=1)
