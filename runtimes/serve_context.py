"""The field app's state, shared by every request: the engine, the database, the security rules and
the static-file table. Its own module so the request layer imports it and the server imports both
(serve_app -> serve_handler -> serve_context), with no circle between them."""
from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Iterator

from lugha.errors import LughaError
from lugha.runtimes.serve_db import FeedbackDB
from lugha.runtimes.serve_engine import FieldEngine
from lugha.runtimes.serve_security import CsrfGuard, PinGate, RateLimiter, RequestRejected, SessionIds, UploadPolicy

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
                 tls: bool = False, quiet: bool = False, ca_cert: Path | None = None, decode_slots: int = 2,
                 decode_wait_s: float = 20.0):
        self.engine, self.db, self.policy = engine, db, policy
        # A decoded photo lives (as pixels, ~3 bytes each) from decode to store; a few parallel uploads of
        # 40 MP each would take a 2 GB Pi down, so only ``decode_slots`` are decoded at once.
        self._decode_slots, self.decode_wait_s = threading.BoundedSemaphore(decode_slots), decode_wait_s
        self.waiting_for_decode, self._waiting_lock = 0, threading.Lock()  # photos queued for a slot
        self.csrf, self.limiter, self.pin = CsrfGuard(), RateLimiter(rate, burst), PinGate(pin)
        self.sessions = SessionIds(db.secret("session"))
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

    @contextlib.contextmanager
    def decode_slot(self) -> Iterator[None]:
        """Hold one of the decode slots for a photo's pixels; a 503 when none frees up in time."""
        with self._waiting_lock:
            self.waiting_for_decode += 1
        try:
            got = self._decode_slots.acquire(timeout=self.decode_wait_s)
        finally:
            with self._waiting_lock:
                self.waiting_for_decode -= 1
        if not got:
            raise RequestRejected(503, "the server is busy with other photos; try again in a moment")
        try:
            yield
        finally:
            self._decode_slots.release()

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


__all__ = ["FieldApp", "static_files", "asset_version", "VENDOR_FILES", "STATIC"]
