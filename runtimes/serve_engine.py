"""The model side of the field app: one opened bundle, the gallery index, and what the phone needs to
run the model itself: the image and text encoders (ONNX, int8 first), the pre-processing spec, the
tokenizer (tokenizer.json + spec, for runtimes/static/tokenizer.js), label packs, the gallery's
embeddings and the golden samples.

Inference runs under one lock: a Pi has four cores and ONNX Runtime already uses them inside one call;
two calls at once would only fight over them (and double the memory peak).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lugha.atomic import atomic_path
from lugha.errors import DataError
from lugha.image_io import ImageFileError, open_image, read_image_bytes
from lugha.manifest import GraphSpec, resolve_in_bundle
from lugha.paths import lugha_home
from lugha.progress import progress
from lugha.runtimes.bundle import Bundle, open_bundle
from lugha.runtimes.index import EmbeddingIndex
from lugha.vocabulary import PRECISION_PREFERENCE

GALLERY_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
THUMB_SIDE = 480  # enough for a phone's result grid, ~30 KB per JPEG over a slow hotspot


def _b64(array: np.ndarray) -> dict:
    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(a.shape), "dtype": "float32", "data": base64.b64encode(a.tobytes()).decode("ascii")}


@dataclass
class GalleryItem:
    id: int
    name: str  # path relative to the gallery folder, '/' separated
    path: Path


def list_gallery(folder: Path) -> list[GalleryItem]:
    """Images under ``folder`` (sorted, hidden files skipped, symlinks out of the folder refused)."""
    root = folder.resolve()
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(GALLERY_SUFFIXES):
                continue
            real = Path(dirpath, f).resolve()
            if root in real.parents:
                names.append(Path(dirpath, f).relative_to(root).as_posix())
    return [GalleryItem(i, n, root / n) for i, n in enumerate(sorted(names))]


class FieldEngine:
    """A bundle plus a gallery, behind the calls the HTTP layer makes."""

    def __init__(self, bundle: str | os.PathLike | Bundle, backend: str = "auto", precision: str = "auto",
                 threads: int | None = None, gallery: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, k: int = 5):
        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, backend, precision, threads)
        self.k = k
        self.lock = threading.Lock()
        self.cache_dir = Path(cache_dir) if cache_dir else lugha_home() / "serve-cache"
        self.gallery: list[GalleryItem] = []
        self._by_id: dict[int, GalleryItem] = {}
        self.gallery_index: EmbeddingIndex | None = None
        self.skipped: list[str] = []
        self.gallery_key = ""
        if gallery is not None:
            self.index_gallery(Path(gallery))
        self.phone_graph = self._phone_graph("image_encoder")
        self.phone_text_graph = self._phone_graph("text_encoder") if self.bundle.manifest.tokenizer else None
        self._thumbs: dict[int, bytes] = {}

    # -- languages -------------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        return self.bundle.label_languages() or list(self.bundle.manifest.languages)

    def check_lang(self, lang: str) -> str:
        if lang not in self.languages:
            raise DataError(f"language {lang!r} is not in this bundle; it has: {', '.join(self.languages)}")
        return lang

    # -- image -> labels, text -> images ---------------------------------------------------------------
    def embed_image(self, image) -> np.ndarray:
        with self.lock:
            return self.bundle.embed_image([image])[0]

    def labels_for(self, embedding: np.ndarray, lang: str, k: int | None = None) -> list[dict]:
        labels, embeds = self.bundle.label_pack(self.check_lang(lang))
        scores = embeds @ embedding
        order = np.argsort(-scores, kind="stable")[: k or self.k]
        return [{"rank": r + 1, "label": labels[i], "score": round(float(scores[i]), 5)} for r, i in enumerate(order)]

    def search_text(self, text: str, lang: str, k: int | None = None) -> list[dict]:
        self.check_lang(lang)
        if self.gallery_index is None or not len(self.gallery_index):
            raise DataError("no gallery: start `lugha serve` with --gallery DIR to search images by text")
        with self.lock:
            query = self.bundle.embed_text([text], lang)
        scores, ids = self.gallery_index.search(query, k or self.k)
        return [{"rank": r + 1, "id": int(i), "name": self.gallery_item(int(i)).name, "score": round(float(s), 5),
                 "url": self.gallery_url(int(i))} for r, (s, i) in enumerate(zip(scores[0], ids[0]))]

    def gallery_url(self, item_id: int) -> str:
        # the index key in the URL: a phone's cached thumbnail never outlives the gallery it came from
        return f"/gallery/{item_id}?v={self.gallery_key}"

    # -- gallery ---------------------------------------------------------------------------------------
    def _gallery_key(self, items: list[GalleryItem]) -> str:
        g = self.bundle.graphs.get("image_encoder")
        h = hashlib.sha256()
        h.update(json.dumps([self.bundle.backend, self.bundle.precision, g.file if g else "",
                             self.bundle.manifest.file(g.file).sha256 if g else ""]).encode())
        for it in items:
            st = it.path.stat()
            h.update(f"{it.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:20]

    def index_gallery(self, folder: Path) -> None:
        """Embed every gallery image once; the index is cached on disk under a key of the image graph and
        the files' names, sizes and times, so a restart of the Pi costs a file read, not a re-embedding."""
        from lugha.runtimes.serve_security import RequestRejected, UploadPolicy, decode_upload

        if not folder.is_dir():
            raise DataError(f"--gallery {folder}: not a folder")
        items = list_gallery(folder)
        self.gallery_key = self._gallery_key(items)
        cache = self.cache_dir / f"gallery-{self.gallery_key}.npz"
        index = self._load_cache(cache, {it.id for it in items})
        if index is not None:
            keep = {int(i) for i in index.ids}
            self.gallery = [it for it in items if it.id in keep]
            self._by_id = {it.id: it for it in self.gallery}
            self.gallery_index = index
            return
        good, vectors = [], []
        for it in progress(items, desc="indexing gallery"):
            try:  # the same checks as a phone upload: a gallery file is untrusted input too
                image, _ = decode_upload(read_image_bytes(it.path, UploadPolicy().max_bytes))
            except (RequestRejected, ImageFileError) as e:  # ImageFileError: a FIFO, a device, too big, gone
                self.skipped.append(f"{it.name}: {e.reason if isinstance(e, ImageFileError) else e}")
                continue
            with self.lock:
                vectors.append(self.bundle.embed_image([image])[0])
            good.append(it)
        self.gallery = good
        self._by_id = {it.id: it for it in good}
        dim = vectors[0].shape[0] if vectors else 1
        self.gallery_index = EmbeddingIndex.from_embeddings(np.stack(vectors) if vectors else np.zeros((0, dim)),
                                                            ids=np.array([it.id for it in good], np.int64))
        try:  # unique temp name, fsync of file and folder: a power cut leaves the old cache or the new one
            with atomic_path(cache) as tmp:
                self.gallery_index.save(tmp)
        except OSError as e:  # a full card: serve anyway, index again at the next start
            sys.stderr.write(f"[serve] gallery index not cached ({e}); it is rebuilt at the next start\n")

    def _load_cache(self, cache: Path, ids: set[int]) -> EmbeddingIndex | None:
        """The cached gallery index, or None when there is none or it is torn or wrong (then it is removed
        and rebuilt: a cache is never a reason not to start)."""
        if not cache.is_file():
            return None
        try:
            index = EmbeddingIndex.load(cache)
            if not {int(i) for i in index.ids} <= ids or index.vectors.ndim != 2:
                raise DataError(f"{cache}: does not match this gallery")
            return index
        except DataError as e:
            sys.stderr.write(f"[serve] {e}: rebuilding the gallery index\n")
            cache.unlink(missing_ok=True)
            return None

    def gallery_item(self, item_id: int) -> GalleryItem | None:
        return self._by_id.get(item_id)

    def thumbnail(self, item_id: int) -> bytes | None:
        """A small JPEG of a gallery image (phones on a hotspot should not pull 5 MB originals)."""
        item = self.gallery_item(item_id)
        if item is None:
            return None
        if item_id not in self._thumbs:
            from PIL import Image

            from lugha.preprocess import to_rgb

            try:  # a regular file, capped, and only the decoders listed: never Pillow's guess among all
                with open_image(item.path) as im:
                    im.thumbnail((THUMB_SIDE, THUMB_SIDE))
                    buf = io.BytesIO()
                    to_rgb(im).save(buf, format="JPEG", quality=85)
            except (ImageFileError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                return None  # changed or removed since it was indexed: no thumbnail (404), not a 500
            if len(self._thumbs) < 2048:
                self._thumbs[item_id] = buf.getvalue()
            return buf.getvalue()
        return self._thumbs[item_id]

    # -- on-phone mode ---------------------------------------------------------------------------------
    def _phone_graph(self, name: str) -> GraphSpec | None:
        """The ONNX graph of a role a phone should fetch: int8 when the bundle has it (smallest)."""
        onnx = [g for g in self.bundle.manifest.graphs if g.name == name and g.format == "onnx"]
        for precision in PRECISION_PREFERENCE:
            for g in onnx:
                if g.precision == precision:
                    return g
        return None

    def phone_files(self) -> dict[str, Path]:
        """Bundle paths a phone may download (the allowlist for /bundle/...)."""
        files = [g.file for g in (self.phone_graph, self.phone_text_graph) if g is not None]
        if self.phone_text_graph is not None:
            files.append(self.bundle.manifest.tokenizer.file)  # type: ignore[union-attr]
        return {f: resolve_in_bundle(self.bundle.root, f) for f in files}

    def _file_info(self, rel: str) -> dict:
        entry = self.bundle.manifest.file(rel)
        return {"url": f"/bundle/{rel}", "bytes": entry.size, "sha256": entry.sha256}

    def _graph_info(self, g: GraphSpec) -> dict:
        return {**self._file_info(g.file), "precision": g.precision, "key": g.key,
                "inputs": [t.name for t in g.inputs], "outputs": [t.name for t in g.outputs],
                "input_shape": list(g.inputs[0].shape), "layout": g.inputs[0].layout,
                "tolerance": {"max_abs": g.tolerance.max_abs, "min_cosine": g.tolerance.min_cosine}}

    def phone_info(self) -> dict:
        g = self.phone_graph
        if g is None:
            return {"available": False, "reason": "this bundle has no ONNX image encoder"}
        pre = self.bundle.manifest.preprocess
        graph = self._graph_info(g)
        graph["layout"] = next(t.layout for t in g.inputs if t.name == "pixel_values") or pre.layout
        graph["input_shape"] = list(next(t.shape for t in g.inputs if t.name == "pixel_values"))
        info = {"available": True, "graph": graph,
                "preprocess": {"size": pre.size, "resize": pre.resize, "crop_pct": pre.crop_pct,
                               "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std),
                               "layout": pre.layout, "dtype": pre.dtype, "fill": list(pre.fill)},
                "labels": {lang: f"/api/labels/{lang}" for lang in self.bundle.label_languages()},
                "tolerance": graph["tolerance"], "text": self._phone_text_info()}
        return info

    def _phone_text_info(self) -> dict:
        """What text -> image search on the phone needs: the text graph, tokenizer.json and its spec."""
        from lugha._schema import to_dict

        tg, spec = self.phone_text_graph, self.bundle.manifest.tokenizer
        if tg is None or spec is None:
            return {"available": False, "reason": "this bundle has no ONNX text encoder and tokenizer"}
        return {"available": True, "graph": self._graph_info(tg), "tokenizer": self._file_info(spec.file),
                "spec": to_dict(spec), "gallery": {"url": "/api/gallery-index", "size": len(self.gallery),
                                                    "key": self.gallery_key}}

    def gallery_index_json(self) -> dict:
        """The gallery's embeddings (as the server scores them) for text search on the phone."""
        index = self.gallery_index
        if index is None or not len(index):
            raise DataError("no gallery: start `lugha serve` with --gallery DIR to search images by text")
        vectors = index.vectors.astype(np.float32)
        if index.precision == "int8":  # the server scores (q @ v) * scale: hand the phone v * scale
            vectors = vectors * index.scales[:, None]
        ids = [int(i) for i in index.ids]
        return {"key": self.gallery_key, "ids": ids, "names": [self.gallery_item(i).name for i in ids],
                "urls": [self.gallery_url(i) for i in ids], "embeds": _b64(vectors)}

    def label_pack_json(self, lang: str) -> dict:
        labels, embeds = self.bundle.label_pack(self.check_lang(lang))
        return {"lang": lang, "labels": labels, "embeds": _b64(embeds)}

    def golden_json(self, which: str = "image") -> dict:
        """A phone graph's golden inputs and outputs (PyTorch's), for the on-phone parity check."""
        g = self.phone_text_graph if which == "text" else self.phone_graph
        if g is None or g.golden is None:
            raise DataError(f"this bundle has no golden samples for its ONNX {which} encoder")
        with np.load(resolve_in_bundle(self.bundle.root, g.golden.inputs), allow_pickle=False) as z:
            ins = {k: _b64(z[k]) if z[k].dtype.kind == "f" else {"shape": list(z[k].shape), "dtype": "int64",
                                                                  "data": z[k].astype(np.int64).ravel().tolist()}
                   for k in z.files}
        with np.load(resolve_in_bundle(self.bundle.root, g.golden.outputs), allow_pickle=False) as z:
            outs = {k: _b64(z[k]) for k in z.files}
        tol = g.tolerance
        return {"graph": g.key, "inputs": ins, "outputs": outs,
                "tolerance": {"max_abs": tol.max_abs, "min_cosine": tol.min_cosine}}

    def describe(self) -> dict:
        m = self.bundle.manifest
        return {"model": m.model.name, "backend": self.bundle.backend, "precision": self.bundle.precision,
                "languages": self.languages, "gallery_size": len(self.gallery), "k": self.k,
                "gallery_skipped": len(self.skipped)}


__all__ = ["FieldEngine", "GalleryItem", "list_gallery", "GALLERY_SUFFIXES"]
