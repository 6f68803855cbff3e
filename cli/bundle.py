"""`lugha bundle`: verify a bundle's files against its manifest, and show what it holds."""
from __future__ import annotations

import argparse
import sys
import time

from lugha.errors import BundleError, ConfigError
from lugha.cli._common import user_path
from lugha.reports import format_table, print_json

HELP = "Inspect and verify a bundle (checksums, schema, graphs)."
DESCRIPTION = """A bundle is a folder: manifest.json beside the graphs, tokenizer.json and golden samples it
lists with their sizes and SHA-256. Check one before copying it to a device, and again on the device:

  lugha bundle verify bundles/lite0-e5                # exit 0 when every file matches the manifest
  lugha bundle verify bundles/lite0-e5 --json         # {"ok": ..., "errors": [...]} for scripts
  lugha bundle verify bundles/lite0-e5 --pubkey pub.pem  # + the ed25519 signature (lugha export --sign)
  lugha bundle verify bundles/lite0-e5.zip --pubkey pub.pem  # a zip too (checked before it is extracted)

Keys in ~/.config/lugha/trusted_keys/*.pem (or $LUGHA_CONFIG/trusted_keys/) are trusted without --pubkey:
then serve, bench, doctor and verify refuse any bundle not signed by one of them.
  lugha bundle info bundles/lite0-e5                  # graphs, languages, sizes, metrics
  lugha bundle info bundles/lite0-e5 --json           # the whole manifest as JSON
"""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("verify", help="Check schema, paths, presence, sizes and SHA-256 of every file.",
                       description="Exit 0 if the bundle is intact; otherwise print one line per problem "
                                   "(missing file, size or SHA-256 mismatch, unsafe path) and exit 1.")
    p.add_argument("bundle", type=user_path, help="bundle folder, its manifest.json, or a .zip")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.add_argument("--pubkey", type=user_path, metavar="PEM",
                   help="also check manifest.json.sig against this ed25519 public key (bundles made with "
                        "`lugha export --sign`; needs cryptography). Default: the keys in "
                        "~/.config/lugha/trusted_keys/*.pem, when there are any")
    p.set_defaults(_run=run_verify)
    p = sub.add_parser("info", help="Show graphs, languages, sizes and metrics (no hashing; see verify).")
    p.add_argument("bundle", type=user_path, help="bundle folder (or its manifest.json)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.set_defaults(_run=run_info)


def run_verify(args: argparse.Namespace) -> int:
    from lugha.runtimes.bundle_zip import extract_bundle
    from lugha.runtimes.signature import check_bundle_trust, is_zip_bundle

    start = time.monotonic()
    tmp = None
    try:
        signer = check_bundle_trust(args.bundle, args.pubkey)  # a zip: read from the zip, nothing extracted yet
        if is_zip_bundle(args.bundle):
            tmp, root = extract_bundle(args.bundle)
        else:
            root = args.bundle
        return _verify_folder(args, root, signer, start)
    except (BundleError, ConfigError) as e:
        return _fail(args, [e])
    finally:
        if tmp is not None:
            tmp.cleanup()


def _verify_folder(args: argparse.Namespace, root, signer, start: float) -> int:
    from lugha.manifest import bundle_root, read_manifest_json, verify_files

    m = read_manifest_json(root)
    problems = verify_files(bundle_root(root), m, show_progress=not args.json)
    if problems:
        return _fail(args, problems)
    seconds = time.monotonic() - start
    if args.json:
        print_json({"ok": True, "bundle": str(args.bundle), "files": len(m.files), "bytes": m.total_bytes,
                    "signed_by": str(signer) if signer else None, "seconds": round(seconds, 3), "errors": []})
    else:
        signed = f", signature by {signer} ok" if signer else ""
        print(f"ok: {len(m.files)} files, {_mb(m.total_bytes)} verified{signed} in {seconds:.1f}s ({args.bundle})")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from lugha.manifest import load_bundle_manifest

    m = load_bundle_manifest(args.bundle, verify=False)
    if args.json:
        print_json({"bundle": str(args.bundle), "total_bytes": m.total_bytes, "manifest": m.to_dict()})
        return 0
    sizes = {f.path: f.size for f in m.files}
    print(f"bundle:    {args.bundle}")
    print(f"model:     {m.model.name}  (lugha {m.lugha_version}, schema {m.schema_version})")
    print(f"languages: {', '.join(m.languages) or '(none listed)'}")
    print(f"size:      {_mb(m.total_bytes)} in {len(m.files)} files")
    p = m.preprocess
    print(f"image in:  {p.size}px {p.resize} {p.interpolation} {p.layout} {p.dtype}")
    if m.tokenizer is not None:
        t = m.tokenizer
        print(f"text in:   {t.file}, max_length {t.max_length}, padding {t.padding}, prefix {t.prefix!r}")
    print()
    rows = [{"graph": g.name, "format": g.format, "precision": g.precision, "file": g.file,
             "size": _mb(sizes.get(g.file, 0)),
             "inputs": "; ".join(_tensor(t) for t in g.inputs),
             "outputs": "; ".join(_tensor(t) for t in g.outputs),
             "golden": "yes" if g.golden else "no"} for g in m.graphs]
    print(format_table(rows))
    metric_rows = [{"precision": prec, "lang": lang, **values}
                   for prec, by_lang in m.metrics.items() for lang, values in by_lang.items()]
    if metric_rows:
        columns = ["precision", "lang"] + sorted({k for r in metric_rows for k in r} - {"precision", "lang"})
        print()
        print(format_table(metric_rows, columns))
    return 0


def _fail(args: argparse.Namespace, problems: list[Exception]) -> int:
    if args.json:
        print_json({"ok": False, "bundle": str(args.bundle), "errors": [str(e) for e in problems]})
    for e in problems:
        print(f"lugha bundle verify: error: {e}", file=sys.stderr)
    return 1


def _tensor(t) -> str:
    return f"{t.name}:{t.dtype}[{','.join(str(d) for d in t.shape)}]"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
