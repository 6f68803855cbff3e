#!/usr/bin/env python3
"""A bounded load test of `lugha serve` on loopback: N concurrent clients (default 20), a fixed total
request count and a time cap, a mix of photo queries, text searches, judgments and config reads.
Reports p50/p90/p99/max latency per endpoint, throughput and errors, as a table and JSON.

  python scripts/loadtest.py --bundle bundles/demo --json loadtest.json     # starts its own server
  python scripts/loadtest.py --url http://127.0.0.1:8080 --requests 400     # a running one (loopback only)

It only ever talks to loopback addresses, and it stops by itself (request count or time cap). A server
it starts runs with --rate-limit 0: the point is the server's capacity, not the per-client limiter.
"""
from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

MIX = ("image", "text", "feedback", "config")


def _png(seed: int, size=(320, 240)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if parts.scheme != "http" or not ok:
        raise SystemExit(f"loadtest: {url} is not an http loopback address; this script only loads loopback")
    return host, parts.port or 80


def start_server(bundle: str, gallery: str | None, workdir: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """The server process, its base URL and what it printed before listening (model, engine, gallery)."""
    if gallery is None:  # text search needs a gallery: make a small one
        gallery = str(workdir / "gallery")
        Path(gallery).mkdir()
        for i in range(12):
            (Path(gallery) / f"g{i:02d}.png").write_bytes(_png(1000 + i, (160, 120)))
    cmd = [sys.executable, "-m", "lugha.cli", "serve", bundle, "--port", "0", "--db", str(workdir / "load.sqlite"),
           "--gallery", gallery, "--rate-limit", "0", "--quiet", "--cache-dir", str(workdir / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    said = []
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"listening on (http://\S+?)/", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
            return proc, m.group(1), said
        said.append(line.rstrip())
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("loadtest: the server did not start")


class Client:
    """One phone: its own connection (keep-alive), session cookie, CSRF token and consent."""

    def __init__(self, base: str, lang: str, photo: bytes, timeout: float):
        self.base, self.lang, self.photo = base, lang, photo
        self.host, self.port = _check_loopback(base)
        self.hosthdr = urlsplit(base).netloc
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.headers = {"Host": self.hosthdr}
        status, cfg = self.call("GET", "/api/config")
        self.headers.update({"X-CSRF-Token": cfg["csrf"], "Origin": base})
        self.lang = lang if lang in [x["code"] for x in cfg["languages"]] else cfg["languages"][0]["code"]
        self.call("POST", "/api/consent", {"agree": True, "tester_lang": "en"})
        status, res = self.call("POST", f"/api/image?lang={self.lang}", photo, "image/png")
        self.query_id, self.label = res["query_id"], res["results"][0]["label"]

    def call(self, method: str, path: str, body=None, ctype: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = ctype
        for attempt in (0, 1):  # a keep-alive connection the server closed: reconnect once
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.headers["Cookie"] = cookie.split(";")[0]
        return resp.status, json.loads(raw) if raw and resp.getheader("Content-Type", "").startswith("application/json") else raw

    def one(self, kind: str, i: int) -> int:
        if kind == "image":
            return self.call("POST", f"/api/image?lang={self.lang}&k=5", self.photo, "image/png")[0]
        if kind == "text":
            return self.call("POST", "/api/text", {"text": f"picha {i}", "lang": self.lang, "k": 5})[0]
        if kind == "feedback":
            return self.call("POST", "/api/feedback", {"mode": "image", "lang": self.lang, "query_id": self.query_id,
                                                       "result": self.label, "rank": 1, "correct": i % 2 == 0,
                                                       "better_caption": f"load {i}"})[0]
        return self.call("GET", "/api/config")[0]


def percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def run_load(base: str, clients: int, requests: int, time_cap: float, lang: str, timeout: float,
             keep_latencies: bool = False) -> dict:
    _check_loopback(base)
    photos = [_png(i) for i in range(4)]
    lat: dict[str, list[float]] = {k: [] for k in MIX}
    errors: dict[str, int] = {}
    counter = iter(range(requests))
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + time_cap

    def worker(w: int) -> None:
        try:
            client = Client(base, lang, photos[w % len(photos)], timeout)
        except Exception as e:  # a client that cannot even start counts, it does not crash the run
            with lock:
                errors[f"setup: {type(e).__name__}"] = errors.get(f"setup: {type(e).__name__}", 0) + 1
            return
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            kind = MIX[i % len(MIX)]
            t0 = time.perf_counter()
            try:
                status = client.one(kind, i)
            except Exception as e:
                status = type(e).__name__
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if status == 200:
                    lat[kind].append(ms)
                else:
                    errors[f"{kind}: {status}"] = errors.get(f"{kind}: {status}", 0) + 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + timeout)
    wall = time.monotonic() - start
    done = sum(len(v) for v in lat.values())
    return {"base": base, "clients": clients, "requests": requests, "time_cap_s": time_cap, "wall_s": round(wall, 2),
            "ok": done, "errors": sum(errors.values()), "error_kinds": errors,
            "throughput_rps": round(done / wall, 1) if wall else None, "capped": wall >= time_cap,
            "all": percentiles([x for v in lat.values() for x in v]),
            "endpoints": {k: percentiles(v) for k, v in lat.items()},
            **({"latencies_ms": lat} if keep_latencies else {})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="start `lugha serve BUNDLE` on 127.0.0.1 (a free port) for the test")
    src.add_argument("--url", help="test a running server at this loopback URL")
    p.add_argument("--gallery", help="gallery for the started server (default: 12 generated images)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--requests", type=int, default=600, help="total requests after set-up (default 600)")
    p.add_argument("--time-cap", type=float, default=120.0, help="stop after this many seconds (default 120)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    p.add_argument("--lang", default="sw", help="result language (default sw; else the bundle's first)")
    p.add_argument("--json", type=Path, help="write the report here as JSON")
    args = p.parse_args(argv)
    proc, said = None, []
    with tempfile.TemporaryDirectory(prefix="lugha-load-") as tmp:
        if args.bundle:
            proc, base, said = start_server(args.bundle, args.gallery, Path(tmp))
        else:
            base = args.url.rstrip("/")
        try:
            report = run_load(base, args.clients, args.requests, args.time_cap, args.lang, args.timeout)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    report["cpu_count"] = os.cpu_count()
    if args.bundle:  # which bundle was loaded matters: a test-tiny bundle answers far faster than the real model
        from lugha.manifest import load_bundle_manifest

        m = load_bundle_manifest(args.bundle, verify=False)
        report["bundle"] = {"path": str(Path(args.bundle).resolve()), "model": m.model.name,
                            "languages": list(m.languages),
                            "graphs": sorted(f"{g.name}/{g.format}/{g.precision}" for g in m.graphs)}
        report["server"] = [line for line in said if line.startswith("lugha serve:")]
    rows = [{"endpoint": k, **v} for k, v in [("all", report["all"]), *report["endpoints"].items()]]
    print(f"{report['ok']} ok, {report['errors']} errors in {report['wall_s']} s "
          f"({report['throughput_rps']} req/s, {args.clients} clients{', TIME CAP HIT' if report['capped'] else ''})")
    for r in rows:
        print(f"  {r['endpoint']:<9} n={r['n']:<5} " + "  ".join(f"{k}={r[k]}" for k in ("p50_ms", "p90_ms", "p99_ms",
                                                                                        "max_ms") if k in r))
    if report["error_kinds"]:
        print(f"  errors: {report['error_kinds']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
