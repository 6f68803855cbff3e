"""The field app's request logic, apart from any server: routing, the checks every request passes (Host,
path, rate limit; same-origin + CSRF for POSTs), static files from the allowlist, and the JSON API. The
ASGI layer (serve_app) reads the request into an :class:`Exchange`, runs :meth:`FieldHandler.respond`
in a worker thread (the engine and SQLite block) and sends back the :class:`Reply`. State lives on the
:class:`lugha.runtimes.serve_context.FieldApp`; the routes are listed in serve_app's docstring."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import IO, TYPE_CHECKING, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from lugha.errors import LughaError
from lugha.runtimes.serve_db import StorageRefused
from lugha.runtimes.serve_fields import MAX_CAPTION, feedback_row, json_object, text
from lugha.runtimes.serve_security import (RequestRejected, check_request_type, check_same_origin, decode_upload,
                                           host_allowed, reencode)

if TYPE_CHECKING:  # pragma: no cover
    from lugha.runtimes.serve_context import FieldApp

COOKIE = "lugha_sid"
MAX_JSON = 64 * 1024
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".json": "application/json; charset=utf-8", ".wasm": "application/wasm", ".png": "image/png",
          ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json", ".txt": "text/plain; charset=utf-8"}
# 'wasm-unsafe-eval' lets onnxruntime-web compile its WebAssembly; nothing else is relaxed.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
                     "Content-Security-Policy": CSP}


@dataclass
class Exchange:
    """One request as the ASGI layer read it. ``body``: the bytes of a POST whose Content-Length was
    within the server's cap (read whole), else None (unread: the handler refuses it from its header)."""

    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]  # case-insensitive .get (Starlette's Headers)
    client: str
    bind: tuple[str, int]  # the address the server listens on, for the Host check
    body: bytes | None = None


@dataclass
class Reply:
    """What to answer: ``body`` bytes, or an open ``file`` of ``length`` bytes to stream (then closed)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: IO[bytes] | None = None


class FieldHandler:
    def __init__(self, app: "FieldApp", exchange: Exchange):
        self.app, self.ex = app, exchange
        self.headers, self.command, self.path = exchange.headers, exchange.method, exchange.target
        self.reply: Reply | None = None

    def respond(self) -> Reply:
        if self.command in ("GET", "HEAD"):
            self._dispatch(GET_ROUTES)
        elif self.command == "POST":
            self._dispatch(POST_ROUTES, post=True)
        else:
            self._error(405, f"method {self.command[:10]} not allowed", {"Allow": "GET, HEAD, POST"})
        return self.reply  # type: ignore[return-value]

    # -- plumbing ------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | Path, ctype: str, headers: dict | None = None) -> None:
        """Answer with ``body``: bytes, or a file (a Path) the ASGI layer streams in chunks."""
        out = {"Content-Type": ctype, **_SECURITY_HEADERS, **(headers or {})}
        if isinstance(body, Path):
            f = body.open("rb")  # the length of the file object sent, not of a second lookup of the path
            out["Content-Length"] = str(os.fstat(f.fileno()).st_size)
            if self.command == "HEAD":
                f.close()
                f = None
            self.reply = Reply(status, out, file=f)
            return
        out["Content-Length"] = str(len(body))
        self.reply = Reply(status, out, body=b"" if self.command == "HEAD" else body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode()
        self._send(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store", **(headers or {})})

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json({"error": message}, status, headers)

    def _client(self) -> str:
        return self.ex.client

    def _session(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            morsel = SimpleCookie(raw).get(COOKIE)
        except Exception:  # a malformed Cookie header is the client's problem, not a 500
            return None
        # only ids this server issued (signed): a client cannot pick its own, or someone else's
        return morsel.value if morsel and self.app.sessions.valid(morsel.value) else None

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestRejected(411, "Content-Length required")
        if int(length) > limit or self.ex.body is None:  # never read (or waited for): refused from its header
            raise RequestRejected(413, f"request body is {int(length)} bytes; the limit is {limit}")
        return self.ex.body

    def _json_body(self) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestRejected(415, f"Content-Type {ctype or '(none)'!r}: expected application/json")
        return json_object(self._body(MAX_JSON))

    # -- dispatch ------------------------------------------------------------------------------------
    def _dispatch(self, routes, post: bool = False) -> None:
        app = self.app
        try:
            if not host_allowed(self.headers.get("Host"), self.ex.bind[0], self.ex.bind[1], app.allowed_hosts):
                raise RequestRejected(421, f"Host {self.headers.get('Host')!r} is not this server; "
                                           "use the address it was started on (or --allow-host)")
            url = urlsplit(self.path)
            path = url.path
            if "\x00" in unquote(path) or ".." in unquote(path).split("/"):
                raise RequestRejected(404, "not found")
            limited = path.startswith(("/api/", "/gallery/", "/bundle/"))
            if limited:
                wait = app.limiter.allow(self._client())
                if wait:
                    raise RequestRejected(429, f"too many requests; retry in {wait:.1f} s")
            if post:
                check_same_origin(self.headers, self.headers.get("Host", ""), app.scheme)
                app.csrf.check(self._session(), self.headers.get("X-CSRF-Token"))
            for pattern, handler in routes:
                m = pattern.fullmatch(path)
                if m:
                    return handler(self, parse_qs(url.query), *m.groups())
            if post:
                raise RequestRejected(404, f"no POST route {path}")
            return self._static(path)
        except RequestRejected as e:
            headers = {"Retry-After": "1"} if e.status in (429, 503) else None
            return self._error(e.status, str(e), headers)
        except StorageRefused as e:  # a quota or a full disk: the server goes on, and says why
            return self._error(e.status, str(e))
        except LughaError as e:  # a bad language, no gallery, no label pack...: the request's fault, said plainly
            return self._error(400, str(e))
        except Exception as e:  # never a traceback to the phone; the operator sees it on the terminal
            sys.stderr.write(f"[serve] error on {self.command} {self.path}: {type(e).__name__}: {e}\n")
            return self._error(500, "internal error (see the server's terminal)")

    def _static(self, path: str) -> None:
        app = self.app
        aliases = {"/": "/static/index.html", "/admin": "/static/admin.html", "/sw.js": "/static/sw.js",
                   "/manifest.webmanifest": "/static/manifest.webmanifest"}
        file = app.files.get(aliases.get(path, path))
        if file is None:
            raise RequestRejected(404, "not found")
        headers = {"Cache-Control": "no-cache"}
        if path == "/sw.js":
            body = file.read_bytes().replace(b"__ASSET_VERSION__", app.version.encode())
            headers["Service-Worker-Allowed"] = "/"
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        else:  # size + mtime: no need to read (or hash) the 14 MB WebAssembly file to answer a revalidation
            st = file.stat()
            etag, body = f'"{st.st_size:x}-{st.st_mtime_ns:x}"', None
        headers["ETag"] = etag
        if self.headers.get("If-None-Match") == etag:
            self.reply = Reply(304, {"ETag": etag, "Content-Length": "0"})
            return
        self._send(200, file if body is None else body, _TYPES.get(file.suffix, "application/octet-stream"), headers)

    # -- GET routes ----------------------------------------------------------------------------------
    def get_config(self, query) -> None:
        sid = self._session()
        headers = {}
        if sid is None:
            sid = self.app.sessions.new()
            secure = "; Secure" if self.app.scheme == "https" else ""
            headers["Set-Cookie"] = f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{secure}"
        data = self.app.config(self.app.db.consent(sid))
        data["csrf"] = self.app.csrf.token(sid)
        self._json(data, headers=headers)

    def get_labels(self, query, lang: str) -> None:
        self._json(self.app.engine.label_pack_json(lang))

    def get_golden(self, query) -> None:
        which = (query.get("graph") or ["image"])[0]
        if which not in ("image", "text"):
            raise RequestRejected(400, f"graph: expected image or text, got {which[:20]!r}")
        self._json(self.app.engine.golden_json(which))

    def get_ca_cert(self, query) -> None:
        if self.app.ca_cert is None:
            raise RequestRejected(404, "not found")
        self._send(200, self.app.ca_cert.read_bytes(), "application/x-x509-ca-cert",
                   {"Content-Disposition": 'attachment; filename="lugha-field-ca.crt"', "Cache-Control": "no-cache"})

    def get_gallery_index(self, query) -> None:
        self._json(self.app.engine.gallery_index_json())

    def get_gallery(self, query, item: str) -> None:
        body = self.app.engine.thumbnail(int(item))
        if body is None:
            raise RequestRejected(404, "no such gallery image")
        self._send(200, body, "image/jpeg", {"Cache-Control": "max-age=86400"})

    def get_bundle(self, query, rel: str) -> None:
        allowed = self.app.engine.phone_files()
        if rel not in allowed:  # only the graphs a phone needs, never an arbitrary bundle path
            raise RequestRejected(404, "not found")
        entry = self.app.engine.bundle.manifest.file(rel)
        etag = f'"{entry.sha256}"'
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", "application/octet-stream", {"ETag": etag})
        self._send(200, allowed[rel], "application/octet-stream",
                   {"ETag": etag, "Cache-Control": "no-cache"})

    # -- POST routes ---------------------------------------------------------------------------------
    def _consented(self) -> tuple[str, str]:
        sid = self._session()
        lang = self.app.db.consent(sid)
        if lang is None:
            raise RequestRejected(403, "consent first: nothing is stored without the tester's consent")
        return sid, lang  # type: ignore[return-value]

    def post_consent(self, query) -> None:
        from lugha.langcodes import normalize_lang

        data = self._json_body()
        if data.get("agree") is not True:
            raise RequestRejected(400, "agree: must be true to record consent")
        tester_lang = normalize_lang(text(data.get("tester_lang"), "tester_lang", 35, required=True), "tester_lang")
        self.app.db.record_consent(self._session(), tester_lang)  # type: ignore[arg-type]
        self._json({"consent": tester_lang})

    def _upload_body(self) -> bytes:
        check_request_type(self.headers.get("Content-Type"))
        return self._body(self.app.policy.max_bytes)

    def _store(self, image, fmt: str) -> str | None:
        sid = self._session()
        if self.app.db.consent(sid) is None:
            return None
        stored, ext = reencode(image, fmt)
        return self.app.db.save_upload(sid, stored, ext, image.width, image.height)  # type: ignore[arg-type]

    def post_image(self, query) -> None:
        lang = self.app.engine.check_lang((query.get("lang") or [""])[0])
        k_text = (query.get("k") or ["0"])[0] or "0"
        if not k_text.isdigit():
            raise RequestRejected(400, f"k: expected a whole number, got {k_text[:20]!r}")
        k = min(int(k_text), 50) or None
        data = self._upload_body()
        with self.app.decode_slot():  # the pixels exist only inside a slot: decode, embed, store
            image, fmt = decode_upload(data, self.app.policy)
            emb = self.app.engine.embed_image(image)
            out = {"results": self.app.engine.labels_for(emb, lang, k), "lang": lang, "query_id": None,
                   "size": [image.width, image.height]}
            try:
                out["query_id"] = self._store(image, fmt)
            except StorageRefused as e:  # the labels are still shown; only keeping the photo is refused
                out["not_stored"] = str(e)
        if (query.get("embed") or ["0"])[0] == "1":
            out["embedding"] = [float(x) for x in emb]
        self._json(out)

    def post_upload(self, query) -> None:
        """Store a photo the phone classified itself, so its judgments can point at it."""
        self._consented()
        data = self._upload_body()
        with self.app.decode_slot():
            image, fmt = decode_upload(data, self.app.policy)
            qid = self._store(image, fmt)
        self._json({"query_id": qid})

    def post_text(self, query) -> None:
        data = self._json_body()
        query = text(data.get("text"), "text", MAX_CAPTION, required=True)
        lang = self.app.engine.check_lang(str(data.get("lang", "")))
        k = data.get("k")
        k = min(max(k, 1), 50) if isinstance(k, int) and not isinstance(k, bool) else None
        self._json({"results": self.app.engine.search_text(query, lang, k), "lang": lang})  # type: ignore[arg-type]

    def post_feedback(self, query) -> None:
        sid, tester_lang = self._consented()
        row = feedback_row(self._json_body(), sid, tester_lang, self.app.engine, self.app.db)
        self._json({"id": self.app.db.add_feedback(**row)})

    def _admin(self) -> None:
        self.app.pin.check(self._client(), self.headers.get("X-Lugha-Pin"))

    def post_admin_stats(self, query) -> None:
        self._admin()
        from lugha.runtimes.serve_feedback import feedback_report

        report = feedback_report(self.app.db, self.app.engine.bundle.manifest, self.app.engine.bundle.precision)
        self._json({"counts": self.app.db.counts(), "report": report})

    def post_admin_rows(self, query) -> None:
        self._admin()
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.app.db.feedback_rows()).encode()
        self._send(200, body, "application/x-ndjson; charset=utf-8",
                   {"Content-Disposition": 'attachment; filename="feedback.jsonl"', "Cache-Control": "no-store"})


    def post_admin_review_queue(self, query) -> None:
        self._admin()
        keep = ("id", "created", "tester_lang", "mode", "lang", "query_text", "query_image", "result", "rank",
                "correct", "appropriate", "better_caption")
        rows = [{k: r[k] for k in keep} for r in self.app.db.review_queue()]
        self._json({"rows": rows, "to_review": self.app.db.counts()["to_review"]})

    def post_admin_review(self, query) -> None:
        """Approve or reject judgments: only approved ones become training rows (``feedback export``)."""
        self._admin()
        data = self._json_body()
        ids, approve = data.get("ids"), data.get("approve")
        if not isinstance(approve, bool):
            raise RequestRejected(400, "approve: expected true or false")
        if not isinstance(ids, list) or not 0 < len(ids) <= 500 or \
                not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise RequestRejected(400, "ids: expected a list of 1 to 500 judgment ids")
        self._json({"updated": self.app.db.set_review(ids, approve)})

    def post_admin_photo(self, query, sha: str) -> None:
        """A stored photo, for the reviewer to see what a caption describes (PIN-guarded like the rest)."""
        self._admin()
        path = self.app.db.upload_path(sha)
        if path is None or not path.is_file():
            raise RequestRejected(404, "no such photo")
        ctype = "image/png" if path.suffix == ".png" else "image/jpeg"
        self._send(200, path, ctype, {"Cache-Control": "no-store"})


GET_ROUTES = [(re.compile(p), f) for p, f in (
    (r"/api/config", FieldHandler.get_config), (r"/api/labels/([A-Za-z0-9-]{1,35})", FieldHandler.get_labels),
    (r"/api/golden", FieldHandler.get_golden), (r"/api/gallery-index", FieldHandler.get_gallery_index),
    (r"/ca\.crt", FieldHandler.get_ca_cert),
    (r"/gallery/([0-9]{1,9})", FieldHandler.get_gallery),
    (r"/bundle/([A-Za-z0-9_./-]{1,200})", FieldHandler.get_bundle))]
POST_ROUTES = [(re.compile(p), f) for p, f in (
    (r"/api/consent", FieldHandler.post_consent), (r"/api/image", FieldHandler.post_image),
    (r"/api/upload", FieldHandler.post_upload), (r"/api/text", FieldHandler.post_text),
    (r"/api/feedback", FieldHandler.post_feedback), (r"/api/admin/stats", FieldHandler.post_admin_stats),
    (r"/api/admin/feedback\.jsonl", FieldHandler.post_admin_rows),
    (r"/api/admin/review-queue", FieldHandler.post_admin_review_queue),
    (r"/api/admin/review", FieldHandler.post_admin_review),
    (r"/api/admin/photo/([0-9a-f]{64})", FieldHandler.post_admin_photo))]


__all__ = ["FieldHandler", "Exchange", "Reply", "GET_ROUTES", "POST_ROUTES", "CSP", "COOKIE"]
