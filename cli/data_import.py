"""`lugha data import FORMAT`: turn a caption dataset as published into a lugha manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from lugha.cli._common import user_path

HELP = "Import a caption dataset (coco, karpathy, flickr, multi30k, xm3600, folder, csv) as a manifest."
DESCRIPTION = """Reads a dataset in the format it was published in and writes a JSONL manifest: one
image-text pair per line, languages as BCP-47 codes (hau -> ha, pt_br -> pt-BR), text Unicode NFC, image
paths relative to the manifest's folder, group = the image (so `lugha data split` keeps all captions
of one image in one split). Rows with an empty caption or a missing image are skipped and counted; an
unknown language code stops the import and lists the rows that use it.

Examples:
  lugha data import coco annotations/captions_val2017.json --images val2017 --lang en --out coco.jsonl
  lugha data import karpathy dataset_flickr8k.json --images Flicker8k_Dataset --out f8k.jsonl
  lugha data import flickr Flickr8k.token.txt --images Flicker8k_Dataset --out f8k.jsonl
  lugha data import flickr results.csv --images flickr30k_images --out f30k.jsonl
  lugha data import multi30k train.en train.de train.fr --image-list train_images.txt \\
      --images flickr30k-images --out m30k.jsonl
  lugha data import xm3600 captions.jsonl --images xm3600/images --langs ha,sw,yo,en --out xm.jsonl
  lugha data import folder photos/ --lang sw --out photos.jsonl       # x.jpg + x.txt / x.ha.txt
  lugha data import csv field.tsv --image-col photo --text-col maelezo --lang-col lugha --out field.jsonl

Run `lugha data import FORMAT --help` for each format's options.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=user_path, required=True, help="manifest to write (JSONL); image paths are made relative to it")
    p.add_argument("--id-prefix", help="prefix of generated record ids (default: the format name)")
    p.add_argument("--split", default="", choices=["", "train", "val", "test"],
                   help="set this split on every record (default: empty, or the source's own)")
    p.add_argument("--allow-missing-images", action="store_true",
                   help="keep rows whose image file does not exist (default: skip and count them)")
    p.add_argument("--allow-outside", action="store_true",
                   help="accept image names that are absolute or climb out of --images with '..' "
                        "(default: skip and count them; a captions file must not pick files on this machine)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _lang(p: argparse.ArgumentParser, default: str | None = "en", what: str = "of the captions") -> None:
    shown = f"default {default}" if default else "no default"
    p.add_argument("--lang", default=default, help=f"language {what} (ISO 639 / BCP-47; {shown})")


def _format(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A format's parser; its description is the help line plus that format's examples from DESCRIPTION."""
    lines, examples = DESCRIPTION.splitlines(), []
    for i, ln in enumerate(lines):
        if ln.startswith(f"  lugha data import {name} "):
            examples.append(ln + ("\n" + lines[i + 1] if ln.endswith("\\") else ""))
    desc = help + ("\n\nExamples:\n" + "\n".join(examples) if examples else "")
    return sub.add_parser(name, help=help, description=desc, formatter_class=argparse.RawDescriptionHelpFormatter)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT")

    p = _format(sub, "coco", "COCO captions JSON (captions_*.json)")
    p.add_argument("captions", type=user_path, help="captions_train2017.json or any file of that shape")
    p.add_argument("--images", type=user_path, required=True, help="folder holding the images' file_name")
    _lang(p)
    _common(p)

    p = _format(sub, "karpathy", "Karpathy split file (dataset_coco.json, dataset_flickr30k.json)")
    p.add_argument("split_file", type=user_path, help="dataset_*.json; its train/val/test (restval = train) are kept")
    p.add_argument("--images", type=user_path, required=True, help="folder the 'filepath/filename' of each image is under")
    _lang(p)
    _common(p)

    p = _format(sub, "flickr", "Flickr8k/30k captions (*.token.txt, results_*.token, results.csv)")
    p.add_argument("captions", type=user_path, help="Flickr8k.token.txt, results_20130124.token, results.csv or captions.txt")
    p.add_argument("--images", type=user_path, required=True, help="folder of the jpg files (Flicker8k_Dataset, flickr30k_images)")
    _lang(p)
    _common(p)

    p = _format(sub, "multi30k", "Multi30k aligned STEM.LANG files + an image list")
    p.add_argument("texts", type=user_path, nargs="+", help="caption files named STEM.LANG (train.en train.de; .gz is fine)")
    p.add_argument("--image-list", type=user_path, required=True, help="image file names, one per line, aligned with the texts")
    p.add_argument("--images", type=user_path, required=True, help="folder of the Flickr30k images")
    _common(p)

    p = _format(sub, "xm3600", "Crossmodal-3600 captions.jsonl (36 languages)")
    p.add_argument("captions", type=user_path, help="captions.jsonl")
    p.add_argument("--images", type=user_path, required=True, help="folder of <image/key>.jpg")
    p.add_argument("--langs", help="comma-separated languages to keep (default: all 36)")
    _common(p)

    p = _format(sub, "folder", "image folder with sidecar captions (x.jpg + x.txt or x.<lang>.txt)")
    p.add_argument("folder", type=user_path, help="folder searched recursively for images")
    _lang(p, None, "of plain x.txt captions (x.<lang>.txt name their own)")
    p.add_argument("--label-from-folder", action="store_true", help="use each image's sub-folder name as label")
    _common(p)

    p = _format(sub, "csv", "CSV/TSV table with a header row; columns chosen by flags")
    p.add_argument("table", type=user_path, help="the .csv / .tsv file")
    p.add_argument("--images", type=user_path, help="folder image paths are relative to (default: the table's folder)")
    p.add_argument("--image-col", default="image", help="image path column (default image)")
    p.add_argument("--text-col", default="text", help="caption column (default text)")
    p.add_argument("--lang-col", help="language column (or --lang for all rows / rows left empty)")
    _lang(p, None, "of every row, or of rows whose --lang-col is empty")
    p.add_argument("--id-col", help="record id column (default csv-<line number>)")
    p.add_argument("--label-col", help="label column (for classification)")
    p.add_argument("--split-col", help="split column (train/val/test; valid, dev, validation accepted)")
    p.add_argument("--delimiter", help="field separator, one character or 'tab' (default: tab for .tsv, else ,)")
    _common(p)
    parser.set_defaults(_import_parser=parser)


def _call(args: argparse.Namespace, options):
    from lugha.data import importers

    fn = importers.get_importer(args.format)
    f = args.format
    if f in ("coco", "flickr"):
        return fn(args.captions, args.images, args.lang, options=options)
    if f == "karpathy":
        return fn(args.split_file, args.images, args.lang, options=options)
    if f == "multi30k":
        return fn(args.texts, args.image_list, args.images, options=options)
    if f == "xm3600":
        langs = [c.strip() for c in args.langs.split(",") if c.strip()] if args.langs else None
        return fn(args.captions, args.images, langs, options=options)
    if f == "folder":
        return fn(args.folder, args.lang, args.label_from_folder, options=options)
    return fn(args.table, args.images, image_col=args.image_col, text_col=args.text_col, lang_col=args.lang_col,
              lang=args.lang, id_col=args.id_col, label_col=args.label_col, split_col=args.split_col,
              delimiter=args.delimiter, options=options)


def format_report(summary: dict, out: str) -> str:
    from lugha.reports import format_table

    rows = list(summary["languages"])
    rows.append({"lang": "all", "language": "", "captions": summary["records"], "images": summary["images"]})
    lines = [f"{summary['format']}: wrote {summary['records']} records to {out}", format_table(rows)]
    if summary["skipped"]:
        lines.append(f"skipped {summary['skipped']} row(s), e.g.:")
        lines += [f"  {ex['where']}: {ex['why']}" for ex in summary["skipped_examples"][:5]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "format", None):
        args._import_parser.print_help()
        return 2
    from lugha.data.importers import ImportOptions
    from lugha.records import write_manifest
    from lugha.reports import print_json

    out = Path(args.out)
    options = ImportOptions(manifest_dir=out.parent, id_prefix=args.id_prefix, split=args.split,
                            check_images=not args.allow_missing_images, allow_outside=args.allow_outside)
    result = _call(args, options)
    write_manifest(out, result.records)
    summary = {**result.summary(), "out": str(out)}
    if args.json:
        print_json(summary)
    else:
        print(format_report(summary, str(out)))
    return 0
