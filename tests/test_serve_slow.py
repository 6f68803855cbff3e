"""Slow and silent clients on the uvicorn server: a request head that never ends, a body that never
arrives, a download nobody reads, and more connections than the cap. Each deadline is set small here;
the assertions are about what the server does (close, 408, 503), with generous bounds on how long the
test waits for it, never about how fast."""
from __future__ import annotations

import socket
import time

import pytest

from test_serve_api import Client, field_bundle, running_server  # noqa: F401 (fixture)


def _connect(base: str) -> socket.socket:
    host, port = base.split("//")[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds`` while we send ``trickle`` a byte at a time."""
    sock.settimeout(0.1)
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try:
            if i < len(trickle):
                sock.send(trickle[i:i + 1])
                i += 1
            data = sock.recv(65536)
            if data == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_request_head_that_never_ends_is_cut_off(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import ServerLimits

    with running_server(field_bundle, tmp_path, limits=ServerLimits(header_timeout_s=0.5)) as (base, _):
        host = base.split("//")[1]
        slow = _connect(base)
        slow.send(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n")
        # one header byte every 0.1 s, for up to 10 s: today's server waits 30 s per byte, forever
        assert _closed_within(slow, 10.0, trickle=b"X-Slow: " + b"a" * 200)
        slow.close()
        assert Client(base).request("GET", "/api/config")[0] == 200


def test_a_body_that_never_arrives_gets_408(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import ServerLimits

    with running_server(field_bundle, tmp_path, limits=ServerLimits(body_timeout_s=0.5)) as (base, _):
        c = Client(base)
        c.start()
        sock = _connect(base)
        head = (f"POST /api/image?lang=en HTTP/1.1\r\nHost: {c.host}\r\nCookie: {c.cookie}\r\nOrigin: {base}\r\n"
                f"X-CSRF-Token: {c.csrf}\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n")
        sock.sendall(head.encode() + b"\x89PNG\r\n\x1a\n")  # 8 of the 5,000 bytes it promised
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer


def test_a_download_nobody_reads_is_dropped(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import STATIC, ServerLimits

    wasm = STATIC / "vendor" / "ort-wasm-simd-threaded.wasm"
    if not wasm.is_file():
        pytest.skip("onnxruntime-web is not vendored (make setup fetches it)")
    with running_server(field_bundle, tmp_path, limits=ServerLimits(send_timeout_s=0.5)) as (base, _):
        host = base.split("//")[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(tuple(host.split(":")[:1]) + (int(host.split(":")[1]),))
        sock.sendall(f"GET /static/vendor/{wasm.name} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        time.sleep(3.0)  # read nothing: the server's send deadline passes many times over
        got, closed = 0, False
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
            closed = True
        except ConnectionResetError:
            closed = True
        except socket.timeout:  # still open: the server is keeping the download for a reader that left
            closed = False
        sock.close()
        assert closed and got < wasm.stat().st_size  # cut off, not kept open for the whole file
        assert Client(base).request("GET", "/api/config")[0] == 200


def test_connections_beyond_the_cap_get_503(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import ServerLimits

    with running_server(field_bundle, tmp_path, limits=ServerLimits(max_connections=4)) as (base, _):
        idle = [_connect(base) for _ in range(4)]
        assert _eventually(lambda: Client(base).request("GET", "/api/config")[0] == 503)
        for s in idle:
            s.close()
        assert _eventually(lambda: Client(base).request("GET", "/api/config")[0] == 200)


def _eventually(check, seconds: float = 10.0) -> bool:
    """``check()`` came true within ``seconds`` (the server accepts and drops sockets on its own loop)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_an_oversized_request_head_is_refused(field_bundle, tmp_path):  # noqa: F811
    with running_server(field_bundle, tmp_path) as (base, _):
        c = Client(base)
        status, _, _ = c.request("GET", "/api/config", headers={"X-Padding": "a" * 40_000})
        assert status in (400, 431)  # past the 16 KB head limit (the stdlib server took up to 64 KB a line)
        assert c.request("GET", "/api/config")[0] == 200


def test_queued_photos_do_not_starve_other_requests(field_bundle, tmp_path):  # noqa: F811
    import threading

    from lugha.runtimes.serve_app import ServerLimits

    from test_serve_api import photo

    limits = ServerLimits(worker_threads=2, model_threads=2)
    with running_server(field_bundle, tmp_path, limits=limits, decode_slots=1, decode_wait_s=60) as (base, app):
        c = Client(base)
        c.start()
        results = []
        with app.decode_slot():  # a photo is being decoded; four more queue behind it
            posts = [threading.Thread(target=lambda: results.append(c.upload(photo(seed=3))[0])) for _ in range(4)]
            for t in posts:
                t.start()
            assert _eventually(lambda: app.waiting_for_decode == 2)  # the model pool is full of waiting photos
            # a one-pool server would have no thread left for this until a photo gave up (60 s)
            status, _, _ = Client(base).request("GET", "/api/config")
            assert status == 200 and app.waiting_for_decode == 2 and not results
        for t in posts:
            t.join(60)
        assert results == [200] * 4
