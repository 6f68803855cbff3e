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
  POST /api/admin/stats /api/admin/feedback.jsonl                             + the PIN read at start
  POST /api/admin/review-queue /api/admin/review /api/admin/photo/SHA         the review before export
Nothing leaves the machine: no request is ever made to another host.
"""
from __future__ import annotations

from http.server import ThreadingHTTPServer
from pathlib import Path

from lugha.runtimes.serve_context import STATIC, VENDOR_FILES, FieldApp, asset_version, static_files
from lugha.runtimes.serve_handler import FieldHandler


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
