"""`lugha serve`: the offline field app for native-speaker testing (library: lugha.runtimes.serve_app)."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from lugha.cli._common import PUBKEY_HELP, user_path, user_path_obj

HELP = "Serve the offline field app for native-speaker testing."
DESCRIPTION = """A mobile web app for testing a bundle with native speakers, with no internet at all: testers take
a photo and judge the labels in their language, or type a caption and judge the gallery images it finds.
Judgments (correct / wrong, culturally appropriate, a better caption) are stored only after consent, in
a local SQLite file, and never sent anywhere. On-phone mode runs the model in the phone's browser
(onnxruntime-web; text tokenised in JS from the bundle's tokenizer.json), cached for offline use.

  lugha serve bundles/demo                                   # http://127.0.0.1:8080 on this machine
  lugha serve bundles/demo --gallery photos/ --db field.sqlite
  LUGHA_SERVE_PIN=482193 lugha serve bundles/demo --host 192.168.4.1 --self-signed   # hotspot, https, admin
  lugha serve bundles/demo --host 192.168.4.1 --tls-cert pi.crt --tls-key pi.key   # your own certificate
  lugha feedback report --db field.sqlite --bundle bundles/demo            # afterwards: human vs automatic

Binds only where told (default 127.0.0.1). Phones keep the app and the model for offline use, and open
the camera, only in a secure context: https or localhost. --self-signed makes a private CA and a
certificate for --host (and --allow-host names) beside the database (field.sqlite -> field.tls/), reused
on restart, and prints the CA's SHA-256 fingerprint: on each phone open https://HOST:PORT/ca.crt, check
the fingerprint, install it (Android: Settings > Security > Install a certificate > CA certificate).

Photos have quotas (per tester, in total, and free disk space kept for judgments); a refused photo is
said so, and the labels still come back. Nothing a tester typed becomes training data until it is
approved in /admin (`lugha feedback export` takes only approved judgments unless --unreviewed).

The admin PIN is read from --pin-file or $LUGHA_SERVE_PIN, never from the command line (every user of
the machine sees arguments in `ps`). Over plain http the PIN crosses the hotspot in clear: anyone on it
can read it; use https (--self-signed) when admin is on.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=user_path, help="bundle folder (or .zip)")
    parser.add_argument("--pubkey", type=user_path, metavar="PEM", help=PUBKEY_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; give the "
                        "hotspot address, e.g. 192.168.4.1, to reach it from phones)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--gallery", type=user_path_obj, default=None, help="folder of images for text -> image search")
    parser.add_argument("--db", type=user_path_obj, default="feedback.sqlite",
                        help="SQLite file for consent and judgments (default ./feedback.sqlite)")
    parser.add_argument("--pin-file", type=user_path, default=None,
                        help="file whose first line is the PIN for admin actions (stats, review, download); "
                             "default $LUGHA_SERVE_PIN; neither: admin off")
    parser.add_argument("--pin", default=None, help=argparse.SUPPRESS)  # refused: argv is visible in `ps`
    parser.add_argument("--backend", default="auto", help="onnxruntime, litert, tflite or auto (default)")
    parser.add_argument("--precision", default="auto", help="int8, fp32, fp16 or auto (default: int8 first)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the engine's)")
    parser.add_argument("--k", type=int, default=5, help="results shown per query (default 5)")
    parser.add_argument("--cache-dir", type=user_path_obj, default=None,
                        help="where the gallery index is cached (default $LUGHA_HOME/serve-cache)")
    parser.add_argument("--rate-limit", type=float, default=5.0, metavar="PER_S",
                        help="requests per second per client, bursts of --burst (default 5; 0 turns it off)")
    parser.add_argument("--burst", type=int, default=30, help="rate-limit burst size (default 30)")
    parser.add_argument("--max-upload-mb", type=float, default=12.0, help="largest photo in MB (default 12)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="largest photo in pixels (default 40M)")
    parser.add_argument("--tester-quota-mb", type=float, default=64.0,
                        help="photo storage per tester session in MB (default 64; also at most 300 photos)")
    parser.add_argument("--photos-total-mb", type=float, default=4096.0,
                        help="photo storage for everyone in MB (default 4096)")
    parser.add_argument("--keep-free-mb", type=float, default=256.0,
                        help="free disk space photos never use, so judgments still save (default 256)")
    parser.add_argument("--max-connections", type=int, default=400,
                        help="open connections at most; more get 503 (default 400, within a Pi's 1024 open files)")
    parser.add_argument("--decode-slots", type=int, default=2,
                        help="photos decoded at once (default 2; each holds its pixels in memory)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="extra Host name the app may be reached by (e.g. pi.local); repeatable")
    parser.add_argument("--tls-cert", "--cert", dest="tls_cert", type=user_path, default=None,
                        help="TLS certificate (PEM, chain after it) for https")
    parser.add_argument("--tls-key", "--key", dest="tls_key", type=user_path, default=None, help="its private key (PEM)")
    parser.add_argument("--self-signed", action="store_true",
                        help="https with a private CA and certificate for --host, made (or reused) beside --db")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")


def run(args: argparse.Namespace) -> int:
    from lugha.errors import ConfigError
    from lugha.runtimes.serve_app import FieldApp, ServerLimits, make_server
    from lugha.runtimes.serve_db import FeedbackDB, UploadQuota
    from lugha.runtimes.serve_engine import FieldEngine
    from lugha.runtimes.serve_security import UploadPolicy, read_pin

    if args.pin is not None:
        raise ConfigError("--pin", "a PIN on the command line is visible to every user in `ps`: put it in a file "
                                   "(--pin-file PATH) or in $LUGHA_SERVE_PIN")
    if args.decode_slots < 1 or args.max_connections < 1:
        raise ConfigError("--decode-slots/--max-connections", "at least 1")
    pin = read_pin(args.pin_file)
    tls = _tls_files(args)
    from lugha.runtimes.signature import check_bundle_trust

    check_bundle_trust(args.bundle, args.pubkey)  # refuse an unsigned bundle before serving it (#17)
    engine = FieldEngine(args.bundle, backend=args.backend, precision=args.precision, threads=args.threads,
                         gallery=args.gallery, cache_dir=args.cache_dir, k=args.k)
    for why in engine.skipped:
        print(f"gallery: skipped {why}", file=sys.stderr)
    mb = 1024 * 1024
    db = FeedbackDB(args.db, quota=UploadQuota(per_session_bytes=int(args.tester_quota_mb * mb),
                                               total_bytes=int(args.photos_total_mb * mb),
                                               reserve_bytes=int(args.keep_free_mb * mb)))
    policy = UploadPolicy(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    app = FieldApp(engine, db, pin=pin, rate=args.rate_limit, burst=args.burst, policy=policy,
                   allowed_hosts=tuple(args.allow_host), tls=tls is not None, quiet=args.quiet,
                   ca_cert=tls.ca_cert if tls else None, decode_slots=args.decode_slots)
    server = make_server(app, args.host, args.port, tls.cert if tls else None, tls.key if tls else None,
                         limits=ServerLimits(max_connections=args.max_connections))
    host, port = server.server_address[:2]
    scheme = "https" if tls else "http"
    if tls is not None:
        _say_tls(tls, f"{scheme}://{host}:{port}")
    info = engine.describe()
    print(f"lugha serve: {info['model']} on {info['backend']}/{info['precision']}, languages "
          f"{', '.join(info['languages'])}, gallery {info['gallery_size']} images, db {args.db}", flush=True)
    if not app.vendor_ok:
        print("lugha serve: on-phone mode off (onnxruntime-web not vendored: bash scripts/vendor_web.sh)",
              file=sys.stderr)
    if pin is not None and tls is None:
        print("lugha serve: warning: admin is on over plain http; the PIN crosses the hotspot in clear "
              "(use --self-signed or --tls-cert for https)", file=sys.stderr, flush=True)
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


def _tls_files(args: argparse.Namespace):
    """The certificate to serve https with (--tls-cert/--tls-key, or --self-signed), or None for http."""
    from lugha.errors import ConfigError
    from lugha.runtimes.serve_tls import given_files, self_signed, tls_folder

    if args.self_signed:
        if args.tls_cert or args.tls_key:
            raise ConfigError("--self-signed", "use either --self-signed or --tls-cert/--tls-key, not both")
        if args.host in ("0.0.0.0", "::", ""):
            raise ConfigError("--host", f"{args.host!r} is every address: --self-signed needs the one phones use, "
                                        "e.g. --host 192.168.4.1 (or add --allow-host NAME)")
        return self_signed(tls_folder(args.db), [args.host, *args.allow_host, "localhost", "127.0.0.1"])
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert/--tls-key", "give both or neither")
    return given_files(args.tls_cert, args.tls_key) if args.tls_cert else None


def _say_tls(tls, base: str) -> None:
    if tls.ca_cert is None:
        print(f"lugha serve: https with {tls.cert} (SHA-256 {tls.fingerprint})", flush=True)
        return
    state = "made" if tls.created else "reused"
    print(f"lugha serve: https with a self-signed certificate for {', '.join(tls.hosts)} ({state}, {tls.cert.parent})\n"
          f"lugha serve: CA certificate SHA-256 fingerprint {tls.fingerprint}\n"
          f"lugha serve: on each phone open {base}/ca.crt, check that fingerprint, install it as a CA certificate",
          flush=True)
