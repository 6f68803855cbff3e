"""`lugha data`: build, import, check, split and measure datasets.

Each action lives in its own module ``lugha.cli.data_<action>`` with ``HELP``, ``configure`` and ``run``.
"""
from __future__ import annotations

import argparse
import importlib

HELP = "Datasets: build the demo data, import public formats, check, split, tokenizer coverage."
DESCRIPTION = """Datasets are JSONL manifests (one image-text pair per line: id, image, text, lang, split,
label). Typical flow:

  lugha data demo --out datasets/demo                 # the embedded multilingual demo (offline)
  lugha data import coco captions.json --images val2017 --lang en --out coco.jsonl
  lugha data check coco.jsonl                     # report and skip bad rows
  lugha data split coco.jsonl --out coco.split.jsonl
  lugha data coverage datasets/demo/manifest.jsonl    # tokenizer coverage per language and script
"""
ACTIONS = ("demo", "import", "check", "split", "coverage")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    for name in ACTIONS:
        try:
            mod = importlib.import_module(f"{__package__}.data_{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.data_{name}":
                raise
            continue  # action not built yet; `lugha data --help` lists only what exists
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure(p)
        p.set_defaults(_run=mod.run)

