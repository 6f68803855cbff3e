"""``lugha serve``: the offline field app over the standard library's ``ThreadingHTTPServer``.

Routes (everything same-origin, every asset vendored under ``static/``):
  GET  /  /admin  /sw.js  /static/...   pages, scripts, translations, onnxruntime-web (allowlisted files)
  GET  /api/config                      session cookie + CSRF token, languages, on-phone model info
  GET  /api/labels/LANG  /api/golden    label pack / golden samples (?graph=image|text) for on-phone inference
  GET  /api/gallery-index               the gallery's embeddings, for text -> image search on the phone
  GET  /gallery/N  /bundle/PATH         gallery thumbnails by index, the phone's ONNX graphs + tokenizer.json
                                        (allowlisted)
  GET  /ca.crt                          the --self-signed CA certificate, for a phone to install
  POST /api/consent /api/image /api/upload /api/text /api/feedback          CSRF + same-origin + rate limit
  POST /api/admin/stats /api/admin/feedback.jsonl                             + the PIN given at start
Nothing leaves the machine: no request is ever made to another host.
"""
from __future__ import annotations

import hashlib
from http.server import ThreadingHTTPServer
from pathlib import Path

from lugha.errors import LughaError
from lugha.runtimes.serve_db import FeedbackDB
from lugha.runtimes.serve_engine import FieldEngine
from lugha.runtimes.serve_handler import FieldHandler
from lugha.runtimes.serve_security import CsrfGuard, PinGate, RateLimiter, UploadPolicy

STATIC = Path(__file__).with_name("static")
VENDOR_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "tokenizers.min.mjs")


def static_files(root: Path = STATIC) -> dict[str, Path]:
    """URL path -> file, for every non-hidden file under static/ (the only files ever served from it)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out["/static/" + rel] = p
    return out


def asset_version(files: dict[str, Path]) -> str:
    """One hash of every static file: the service worker's cache name changes when any asset does."""
    h = hashlib.sha256()
    for url, p in sorted(files.items()):
        h.update(url.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


class FieldApp:
    """Everything a request handler needs; one per server."""

    def __init__(self, engine: FieldEngine, db: FeedbackDB, pin: str | None = None, rate: float = 5.0,
                 burst: int = 30, policy: UploadPolicy = UploadPolicy(), allowed_hosts: tuple[str, ...] = (),
                 tls: bool = False, quiet: bool = False, ca_cert: Path | None = None):
        self.engine, self.db, self.policy = engine, db, policy
        self.csrf, self.limiter, self.pin = CsrfGuard(), RateLimiter(rate, burst), PinGate(pin)
        self.allowed_hosts, self.scheme, self.quiet = tuple(h.lower() for h in allowed_hosts), \
            "https" if tls else "http", quiet
        self.ca_cert = ca_cert  # public: what a phone installs to trust --self-signed
        self.files = static_files()
        self.version = asset_version(self.files)
        # the phone's model cache is keyed by app *and* bundle: a new bundle's graph and labels are fetched anew
        manifest_hash = hashlib.sha256((engine.bundle.root / "manifest.json").read_bytes()).hexdigest()[:12]
        self.model_cache = f"lugha-model-{self.version}-{manifest_hash}"
        self.vendor_ok = all(f"/static/vendor/{n}" in self.files for n in VENDOR_FILES)
        self.ui_languages = sorted(p.stem for p in (STATIC / "i18n").glob("*.json"))

    def config(self, tester_lang: str | None) -> dict:
        from lugha.langcodes import language_name

        def name(code: str) -> str:
            try:
                return language_name(code)
            except LughaError:
                return code

        phone = {**self.engine.phone_info(), "cache": self.model_cache}
        if phone.get("available") and not self.vendor_ok:
            phone = {"available": False, "reason": "onnxruntime-web or @huggingface/tokenizers is not vendored: "
                                                  "run scripts/vendor_web.sh"}
        return {"engine": self.engine.describe(), "languages": [{"code": c, "name": name(c)}
                                                                for c in self.engine.languages],
                "ui_languages": self.ui_languages, "consent": tester_lang, "phone": phone,
                "version": self.version, "admin": self.pin.pin is not None,
                "upload": {"max_bytes": self.policy.max_bytes, "max_pixels": self.policy.max_pixels}}


class FieldServer(ThreadingHTTPServer):
    daemon_threads = True  # a phone that vanishes mid-request must not keep the Pi from stopping
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], app: FieldApp):
        self.app = app
        super().__init__(address, FieldHandler)

    def handle_error(self, request, client_address) -> None:
        import ssl
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, ConnectionError, TimeoutError)):  # plain http to https, a dropped phone
            if not self.app.quiet:
                sys.stderr.write(f"[serve] {client_address[0]} connection: {type(err).__name__}: {err}\n")
            return
        super().handle_error(request, client_address)


def make_server(app: FieldApp, host: str = "127.0.0.1", port: int = 8080, certfile: str | Path | None = None,
                keyfile: str | Path | None = None) -> FieldServer:
    """A bound server (port 0 picks a free one: ``server.server_address``); call ``serve_forever()``."""
    server = FieldServer((host, port), app)
    if certfile:  # a secure context: phones only run service workers (offline mode) over https or localhost
        from lugha.runtimes.serve_tls import server_context

        # the handshake happens in the request's thread (first read), under the handler's timeout: a slow
        # or silent client never holds up accept()
        server.socket = server_context(certfile, keyfile or certfile).wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False)
    return server


__all__ = ["FieldApp", "FieldServer", "make_server", "static_files", "asset_version", "VENDOR_FILES", "STATIC"]
