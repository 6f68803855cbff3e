"""`lugha serve`: the offline field app for native-speaker testing (library: lugha.runtimes.serve_app)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

HELP = "Serve the offline field app for native-speaker testing."
DESCRIPTION = """A mobile web app for testing a bundle with native speakers, with no internet at all: testers take
a photo and judge the labels in their language, or type a caption and judge the gallery images it finds.
Judgments (correct / wrong, culturally appropriate, a better caption) are stored only after consent, in
a local SQLite file, and never sent anywhere. On-phone mode runs the image encoder in the phone's browser
(onnxruntime-web, cached for offline use); text is embedded on the server.

  lugha serve bundles/demo                                   # http://127.0.0.1:8080 on this machine
  lugha serve bundles/demo --gallery photos/ --db field.sqlite
  lugha serve bundles/demo --host 192.168.4.1 --pin 4821     # the Pi's hotspot address, admin PIN
  lugha serve bundles/demo --host 192.168.4.1 --cert pi.crt --key pi.key   # https: offline mode on phones
  lugha feedback report --db field.sqlite --bundle bundles/demo            # afterwards: human vs automatic

Binds only where told (default 127.0.0.1). Phones keep the app and the model for offline use only in a
secure context: https (--cert/--key, e.g. `openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj
/CN=192.168.4.1 -addext subjectAltName=IP:192.168.4.1 -keyout pi.key -out pi.crt`) or localhost.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder (or .zip)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; give the "
                        "hotspot address, e.g. 192.168.4.1, to reach it from phones)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--gallery", type=Path, default=None, help="folder of images for text -> image search")
    parser.add_argument("--db", type=Path, default=Path("feedback.sqlite"),
                        help="SQLite file for consent and judgments (default ./feedback.sqlite)")
    parser.add_argument("--pin", default=os.environ.get("LUGHA_SERVE_PIN"),
                        help="PIN for admin actions (stats, download); default $LUGHA_SERVE_PIN; none: admin off")
    parser.add_argument("--backend", default="auto", help="onnxruntime, litert, tflite or auto (default)")
    parser.add_argument("--precision", default="auto", help="int8, fp32, fp16 or auto (default: int8 first)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the engine's)")
    parser.add_argument("--k", type=int, default=5, help="results shown per query (default 5)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the gallery index is cached (default $LUGHA_HOME/serve-cache)")
    parser.add_argument("--rate-limit", type=float, default=5.0, metavar="PER_S",
                        help="requests per second per client, bursts of --burst (default 5; 0 turns it off)")
    parser.add_argument("--burst", type=int, default=30, help="rate-limit burst size (default 30)")
    parser.add_argument("--max-upload-mb", type=float, default=12.0, help="largest photo in MB (default 12)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="largest photo in pixels (default 40M)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="extra Host name the app may be reached by (e.g. pi.local); repeatable")
    parser.add_argument("--cert", default=None, help="TLS certificate (PEM) for https")
    parser.add_argument("--key", default=None, help="TLS private key (PEM) for https")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..runtimes.serve_app import FieldApp, make_server
    from ..runtimes.serve_db import FeedbackDB
    from ..runtimes.serve_engine import FieldEngine
    from ..runtimes.serve_security import UploadPolicy

    if args.pin is not None and len(args.pin) < 4:
        raise ConfigError("--pin", "use at least 4 characters")
    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert/--key", "give both or neither")
    engine = FieldEngine(args.bundle, backend=args.backend, precision=args.precision, threads=args.threads,
                         gallery=args.gallery, cache_dir=args.cache_dir, k=args.k)
    for why in engine.skipped:
        print(f"gallery: skipped {why}", file=sys.stderr)
    db = FeedbackDB(args.db)
    policy = UploadPolicy(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    app = FieldApp(engine, db, pin=args.pin, rate=args.rate_limit, burst=args.burst, policy=policy,
                   allowed_hosts=tuple(args.allow_host), tls=bool(args.cert), quiet=args.quiet)
    server = make_server(app, args.host, args.port, args.cert, args.key)
    host, port = server.server_address[:2]
    scheme = "https" if args.cert else "http"
    info = engine.describe()
    print(f"lugha serve: {info['model']} on {info['backend']}/{info['precision']}, languages "
          f"{', '.join(info['languages'])}, gallery {info['gallery_size']} images, db {args.db}", flush=True)
    if not app.vendor_ok:
        print("lugha serve: on-phone mode off (onnxruntime-web not vendored: bash scripts/vendor_web.sh)",
              file=sys.stderr)
    print(f"lugha serve: listening on {scheme}://{host}:{port}/  (Ctrl-C stops)", flush=True)

    def stop(signum, frame):  # systemd and `kill` send SIGTERM: close the database as Ctrl-C would
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        db.close()
    return 0
