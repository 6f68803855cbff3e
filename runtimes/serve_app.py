"""``lugha serve``: the offline field app on uvicorn (asyncio + h11, pure Python: a Pi runs it as is)
with a Starlette front. uvicorn holds the connections: its connection cap, keep-alive timeout and header
size limit are used as they are; it has no deadline for a request head that never ends (slowloris), for
a body that never arrives or for a download nobody reads, so those three are added here. The request
logic (serve_handler) runs in a bounded pool of worker threads, because the engine and SQLite block.

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

import asyncio
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from lugha.errors import MissingDependencyError
from lugha.runtimes.serve_context import STATIC, VENDOR_FILES, FieldApp, asset_version, static_files
from lugha.runtimes.serve_handler import MAX_JSON, Exchange, FieldHandler, Reply

# Files go out in chunks, each with its own send deadline: one deadline for a whole 120 MB text graph
# would cut off a phone on a slow hotspot mid-body, and a Pi never holds a whole graph in memory.
CHUNK = 256 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """What one phone (or a hostile client) may hold. 400 connections fit a Pi's default 1024 open
    files with room for the database and the bundle; a request head must arrive within 10 s of
    connecting (or of the previous answer on a kept-alive connection), a body within 120 s (12 MB at
    ~0.8 Mbit/s), and each 256 KB chunk of a download must be taken within 30 s."""

    max_connections: int = 400
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    send_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_header_bytes: int = 16 * 1024
    worker_threads: int = 16
    model_threads: int = 4  # photo and text queries: their own pool, so a queue of them never starves the rest
    graceful_s: int = 5


def _guarded_protocol(limits: ServerLimits):
    """uvicorn's h11 protocol plus a deadline for each request head (uvicorn has none)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None
        _head_cycle = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            self._arm()  # first: a pipelined request started by super() replaces the cycle seen here
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_cycle = self.cycle
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_late)

        def _head_late(self) -> None:
            if self.cycle is self._head_cycle and not self.transport.is_closing():  # no new request began
                self.transport.close()

    return GuardedH11Protocol


def _file_response(reply: Reply, send_timeout_s: float):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    class FileReply(Response):
        """Streams ``reply.file`` CHUNK at a time; a chunk not taken within ``send_timeout_s`` ends it."""

        def __init__(self) -> None:
            self.status_code, self.background = reply.status, None
            self.init_headers(reply.headers)

        async def __call__(self, scope, receive, send) -> None:
            f = reply.file
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                while True:
                    chunk = await run_in_threadpool(f.read, CHUNK)
                    await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": bool(chunk)}),
                                           send_timeout_s)
                    if not chunk:
                        return
            except (asyncio.TimeoutError, OSError):
                return  # a phone that stopped reading: uvicorn closes the unfinished response
            finally:
                f.close()  # type: ignore[union-attr]

    return FileReply()


def build_asgi(app: FieldApp, bind: tuple[str, int], limits: ServerLimits = ServerLimits()):
    """The Starlette app: read the request (a POST body whole, within the caps), run the request logic
    in a worker thread, send its reply."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    max_body = max(app.policy.max_bytes, MAX_JSON)
    model_routes = ("/api/image", "/api/upload", "/api/text")
    pools: dict = {}  # made on first use: an anyio limiter belongs to the running event loop

    async def read_body(request) -> bytes:
        parts = []
        async for chunk in request.stream():
            parts.append(chunk)
        return b"".join(parts)

    async def endpoint(request):
        # h11's limit (max_header_bytes) holds only a head still arriving; one that came in a single read
        # is measured here
        if sum(len(k) + len(v) + 4 for k, v in request.scope["headers"]) > limits.max_header_bytes:
            return JSONResponse({"error": f"request headers over {limits.max_header_bytes} bytes"}, 431,
                                headers={"Connection": "close"})
        body, length = None, request.headers.get("content-length", "")
        if request.method == "POST" and length.isdigit() and int(length) <= max_body:
            try:
                body = await asyncio.wait_for(read_body(request), limits.body_timeout_s)
            except asyncio.TimeoutError:
                return JSONResponse({"error": f"the request body did not arrive within {limits.body_timeout_s:g} s"},
                                    408, headers={"Connection": "close"})
            except ClientDisconnect:
                return Response(status_code=400)
        scope = request.scope
        target = scope["raw_path"].decode("latin-1") + (f"?{scope['query_string'].decode('latin-1')}"
                                                         if scope["query_string"] else "")
        client = request.client.host if request.client else ""
        ex = Exchange(request.method, target, request.headers, client, bind, body)
        if request.url.path in model_routes:  # waits for the engine lock or a decode slot happen here
            import anyio.to_thread

            pool = pools.setdefault("model", anyio.CapacityLimiter(limits.model_threads))
            reply = await anyio.to_thread.run_sync(FieldHandler(app, ex).respond, limiter=pool)
        else:
            reply = await run_in_threadpool(FieldHandler(app, ex).respond)
        if not app.quiet:
            sys.stderr.write(f"[serve] {client} {request.method} {target[:200]} {reply.status}\n")
        if reply.file is not None:
            return _file_response(reply, limits.send_timeout_s)
        return Response(reply.body, reply.status, reply.headers)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


class FieldServer:
    """A bound server (``server_address`` is known before serving); ``serve_forever()`` blocks until
    ``shutdown()`` (from another thread) or SIGINT/SIGTERM; ``server_close()`` releases the port."""

    def __init__(self, app: FieldApp, host: str, port: int, certfile: str | Path | None = None,
                 keyfile: str | Path | None = None, limits: ServerLimits = ServerLimits()):
        try:
            import uvicorn
        except ImportError:
            raise MissingDependencyError("lugha serve needs uvicorn and starlette: pip install 'lugha[serve]'") from None
        self.app, self.limits = app, limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(build_asgi(app, self.server_address, limits), http=_guarded_protocol(limits),
                                lifespan="off", access_log=False, log_config=None, server_header=False,
                                log_level="critical" if app.quiet else "warning",
                                limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keep_alive_s,
                                h11_max_incomplete_event_size=limits.max_header_bytes,
                                timeout_graceful_shutdown=limits.graceful_s)
        config.load()
        if certfile:  # a secure context: phones only run service workers (offline mode) over https or localhost
            from lugha.runtimes.serve_tls import server_context

            config.ssl = server_context(certfile, keyfile or certfile)  # TLS 1.2+, checked at start
        self._server = uvicorn.Server(config)
        self._done = threading.Event()

    def serve_forever(self) -> None:
        async def main() -> None:
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = self.limits.worker_threads
            await self._server.serve(sockets=[self.socket])

        try:
            asyncio.run(main())
        finally:
            self._done.set()

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._done.wait(timeout=self.limits.graceful_s + 10)

    def server_close(self) -> None:
        self.socket.close()


def make_server(app: FieldApp, host: str = "127.0.0.1", port: int = 8080, certfile: str | Path | None = None,
                keyfile: str | Path | None = None, limits: ServerLimits = ServerLimits()) -> FieldServer:
    """A bound server (port 0 picks a free one: ``server.server_address``); call ``serve_forever()``."""
    return FieldServer(app, host, port, certfile, keyfile, limits)


__all__ = ["FieldApp", "FieldServer", "ServerLimits", "make_server", "build_asgi", "static_files", "asset_version",
           "VENDOR_FILES", "STATIC"]
