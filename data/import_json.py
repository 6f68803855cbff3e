"""JSON caption formats: COCO captions, Karpathy's split files, Crossmodal-3600."""
from __future__ import annotations

import json
import os
from pathlib import Path

from lugha.errors import DataError
from lugha.jsonl import iter_jsonl
from lugha.progress import progress
from lugha.data.importers import ImportOptions, ImportResult, RecordBuilder, normalize_split, require_dir
from lugha.langcodes import normalize_langs


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start})") from None
    except RecursionError:  # [[[[... deep enough to exhaust the parser's stack
        raise DataError(f"{path}: JSON nested too deep to parse (malformed_json)") from None


def import_coco(captions: str | os.PathLike, images: str | os.PathLike, lang: str = "en",
                options: ImportOptions | None = None) -> ImportResult:
    """COCO captions JSON (``captions_train2017.json``; also STAIR/COCO-CN and any file of that shape):
    ``images`` [{id, file_name}] + ``annotations`` [{id, image_id, caption}]. Id: ``coco-<annotation id>``."""
    path, root = Path(captions), require_dir(images, "--images")
    data = _load_json(path)
    images_list = data.get("images") if isinstance(data, dict) else None
    if images_list and isinstance(images_list[0], dict) and "sentences" in images_list[0]:
        raise DataError(f"{path}: this is a Karpathy split file; import it with the 'karpathy' format")
    if not isinstance(images_list, list) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO captions file (needs top-level 'images' and 'annotations' lists)")
    anns = data["annotations"]
    if anns and not any(isinstance(a, dict) and "caption" in a for a in anns):
        raise DataError(f"{path}: annotations have no 'caption' (is this instances_*.json, not captions_*.json?)")
    files: dict[object, str] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        files[img["id"]] = img["file_name"]
    b = RecordBuilder("coco", options, root)
    for i, ann in enumerate(progress(anns, desc="coco")):
        where = f"{path.name}:annotations[{i}]"
        if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann:
            raise DataError(f"{where}: needs 'id', 'image_id' and 'caption'")
        name = files.get(ann["image_id"])
        if name is None:
            b.skip(where, f"image_id {ann['image_id']!r} is not in 'images'")
            continue
        b.add(id=b.make_id(ann["id"]), image=root / name, text=ann.get("caption", ""), lang=lang, where=where,
              group=name, meta={"image_id": ann["image_id"]})
    return b.finish()


def import_karpathy(split_file: str | os.PathLike, images: str | os.PathLike, lang: str = "en",
                    options: ImportOptions | None = None) -> ImportResult:
    """Karpathy's ``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json``: images
    with their ``sentences`` and the standard ``split`` (``restval`` counts as train). Id:
    ``karpathy-<sentid>``. ``options.split``, if set, overrides the file's splits."""
    path, root = Path(split_file), require_dir(images, "--images")
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a Karpathy split file (needs a top-level 'images' list)")
    b = RecordBuilder("karpathy", options, root)
    for i, img in enumerate(progress(data["images"], desc="karpathy")):
        where = f"{path.name}:images[{i}]"
        if not isinstance(img, dict) or not isinstance(img.get("filename"), str) \
                or not isinstance(img.get("sentences"), list):
            raise DataError(f"{where}: needs 'filename' and 'sentences'")
        name = f"{img['filepath']}/{img['filename']}" if img.get("filepath") else img["filename"]
        split = b.split or normalize_split(str(img.get("split", "")), f"{where}.split")
        for j, sent in enumerate(img["sentences"]):
            sid = sent.get("sentid", f"{img.get('imgid', i)}-{j}") if isinstance(sent, dict) else None
            text = sent.get("raw", "") if isinstance(sent, dict) else ""
            # group by file name alone, as the coco importer does, so both imports agree on an image
            b.add(id=b.make_id(sid), image=root / name, text=text, lang=lang, where=f"{where}.sentences[{j}]",
                  group=img["filename"], split=split)
    return b.finish()


def import_xm3600(captions: str | os.PathLike, images: str | os.PathLike, langs: list[str] | None = None,
                  options: ImportOptions | None = None) -> ImportResult:
    """Crossmodal-3600 ``captions.jsonl``: one line per image, ``image/key`` plus one object per language
    with a ``caption`` list; images are ``<key>.jpg``. ``langs`` keeps only those languages (any code
    form). Id: ``xm3600-<key>-<lang>-<n>``."""
    path, root = Path(captions), require_dir(images, "--images")
    wanted = set(normalize_langs(langs)) if langs else None
    b = RecordBuilder("xm3600", options, root)
    seen: set[str] = set()
    for line in progress(iter_jsonl(path), desc="xm3600"):
        where = f"{path.name}:{line.lineno}"
        if line.kind is not None:  # a bad line is a reported row, the rest of the file is still read
            b.skip(where, f"{line.kind}: {line.message}")
            continue
        obj = line.data
        key = obj.get("image/key")
        if not isinstance(key, str):
            raise DataError(f"{where}: no 'image/key'")
        for code, entry in obj.items():
            if not isinstance(entry, dict) or "caption" not in entry:
                continue
            tag = b.langs(code, f"{where} key {code!r}")
            if tag is not None:
                seen.add(tag)
            if tag is None or (wanted is not None and tag not in wanted):
                continue
            caps = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
            for n, text in enumerate(caps):
                b.add(id=b.make_id(key, tag, n), image=root / f"{key}.jpg", text=text, lang=tag,
                      where=f"{where} {code}[{n}]", group=key)
    if wanted and not wanted & seen:
        raise DataError(f"{path}: none of the languages {sorted(wanted)} occur (found: {sorted(seen)})")
    return b.finish()
