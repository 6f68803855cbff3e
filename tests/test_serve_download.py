"""Big downloads to a slow phone: the WebAssembly engine (14 MB) and the text graph (~120 MB on real
bundles) reach a client that reads slowly, well past the per-chunk send deadline, whole."""
from __future__ import annotations

import socket
import time

import pytest

from test_serve_api import field_bundle, running_server  # noqa: F401 (fixture)


def _slow_get(base: str, path: str, pace_s: float = 0.01, block: int = 64 * 1024) -> tuple[bytes, bytes, float]:
    """GET over a raw socket with a small receive window, reading one block per ``pace_s``."""
    host, port = base.split("//")[1].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, block)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    t0, data = time.perf_counter(), bytearray()
    while chunk := sock.recv(block):
        data += chunk
        time.sleep(pace_s)
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body, time.perf_counter() - t0


def test_slow_client_gets_the_whole_file(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import STATIC, ServerLimits

    wasm = STATIC / "vendor" / "ort-wasm-simd-threaded.wasm"
    if not wasm.is_file():
        pytest.skip("onnxruntime-web is not vendored (make setup fetches it)")
    with running_server(field_bundle, tmp_path, limits=ServerLimits(send_timeout_s=0.5)) as (base, _):
        head, body, took = _slow_get(base, "/static/vendor/ort-wasm-simd-threaded.wasm")
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {wasm.stat().st_size}".encode() in head.lower()
    assert took > 1.0, f"the client read too fast ({took:.2f} s) to test the timeout"
    assert len(body) == wasm.stat().st_size and body == wasm.read_bytes()
