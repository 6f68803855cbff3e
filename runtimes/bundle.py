"""``open_bundle``: a verified bundle, its graphs loaded on one backend, behind a numpy API.

Host code does what graphs must not: pre-processing (lugha.preprocess, the one implementation),
tokenising (the bundle's tokenizer.json) and L2-normalising embeddings (int8 graphs lose too much inside
a normalisation). Everything returns float32 numpy arrays; nothing here imports torch.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lugha.errors import BundleError, ConfigError, MissingDependencyError
from lugha.manifest import BundleManifest, GraphSpec, bundle_root, load_bundle_manifest, resolve_in_bundle
from lugha.preprocess import preprocess_batch
from lugha.runtimes.backends import (AUTO_ORDER, PRECISION_ORDER, REFERENCE_BACKEND, GraphNotInBundleError,
                                    GraphSession, Reference, UnsupportedGraphError, backend_info, import_engine,
                                    is_installed, not_installed_reason, unsupported_reason)
from lugha.runtimes.bundle_zip import extract_bundle
from lugha.runtimes.index import EmbeddingIndex, l2_normalize
from lugha.runtimes.signature import is_zip_bundle, trusted_keys, verify_folder, verify_zip
from lugha.vocabulary import GRAPH_ROLES

ROLES = GRAPH_ROLES


class LabelPackError(BundleError):
    """No label pack for a language, or one whose arrays are malformed."""


def _choose(manifest: BundleManifest, backend: str, precision: str) -> tuple[str, str]:
    """Resolve ``auto`` backend/precision to ones this machine and this bundle both have."""
    have = sorted({(g.format, g.precision) for g in manifest.graphs})
    listing = ", ".join(f"{f}/{p}" for f, p in have) or "no graphs"
    candidates = list(AUTO_ORDER) if backend == "auto" else [backend]
    tried = []
    for name in candidates:
        info = backend_info(name)
        formats = [p for f, p in have if f == info.format]
        if not formats:
            tried.append(f"{name}: no {info.format} graphs")
            if backend != "auto":
                raise GraphNotInBundleError(f"bundle has no {info.format} graphs for backend {name!r}; "
                                            f"it has: {listing}")
            continue
        if precision == "auto":  # the most compact precision whose every graph this backend runs right
            usable = [p for p in PRECISION_ORDER if p in formats and not any(
                unsupported_reason(name, g) for g in manifest.graphs if (g.format, g.precision) == (info.format, p))]
            if not usable:
                tried.append(f"{name}: no precision it runs correctly")
                continue
            chosen = usable[0]
        elif precision in formats:
            chosen = precision
        else:
            if precision not in PRECISION_ORDER:
                raise ConfigError("precision", f"unknown precision {precision!r}; known: "
                                  f"{', '.join(PRECISION_ORDER)}, auto")
            raise GraphNotInBundleError(f"bundle has no {info.format}/{precision} graphs; it has: {listing}")
        if not is_installed(name):
            if backend != "auto":
                import_engine(name)  # raises BackendNotInstalledError with the pip command
            tried.append(not_installed_reason(name))
            continue
        return name, chosen
    raise GraphNotInBundleError(f"no installed backend can run this bundle ({listing}): {'; '.join(tried)}")


def load_graph_session(root: str | os.PathLike, spec: GraphSpec, backend: str,
                       threads: int | None = None) -> GraphSession:
    """One graph of a bundle folder on one backend (device_tests and benchmarks time graphs alone)."""
    if backend_info(backend).format != spec.format:
        raise GraphNotInBundleError(f"{spec.key}: backend {backend!r} runs {backend_info(backend).format} graphs")
    if why := unsupported_reason(backend, spec):
        raise UnsupportedGraphError(f"{spec.key} on {backend!r}: {why}")
    path = Path(root) / spec.file
    if backend == "onnxruntime":
        from lugha.runtimes.ort_backend import load_graph
    else:
        from lugha.runtimes.litert_backend import load_graph
    return load_graph(path, spec, threads=threads, backend=backend)


def open_bundle(path: str | os.PathLike, backend: str = "auto", precision: str = "auto",
                threads: int | None = None, verify: bool = True,
                reference: Reference | None = None, pubkey: str | os.PathLike | None = None) -> "Bundle":
    """Open a bundle folder (or .zip) on one backend at one precision.

    ``verify`` checks every file's SHA-256 first (a tampered graph is refused). ``pubkey`` (or the config
    folder's ``trusted_keys/``, see :mod:`lugha.runtimes.signature`): then an unsigned or mis-signed
    bundle is refused before anything in it is read. A zip is checked (central directory) and extracted
    within limits (:mod:`lugha.runtimes.bundle_zip`). ``threads``: intra-op
    threads (None: the engine's default). ``reference``: for ``backend="torch"`` only, the model the
    bundle was exported from, opened by code above the runtimes
    (``lugha.export.eager_reference.reference_for(RUN or "config")``); fp32 only."""
    src = Path(path)
    keys = trusted_keys(pubkey)
    if keys and is_zip_bundle(src):
        verify_zip(src, keys)  # from the zip's own bytes: an unsigned zip is refused before extraction
    tmp, root = extract_bundle(src) if is_zip_bundle(src) else (None, bundle_root(src))
    try:
        if keys:
            verify_folder(root, keys)  # the manifest that is about to be trusted, as extracted
        return _open_root(root, tmp, backend, precision, threads, verify, reference)
    except BaseException:  # the extracted copy goes with the failure (Bundle.close() removes it otherwise)
        if tmp is not None:
            tmp.cleanup()
        raise


def _open_root(root: Path, tmp, backend: str, precision: str, threads: int | None, verify: bool,
               reference: Reference | None) -> "Bundle":
    manifest = load_bundle_manifest(root, verify=verify)
    if backend == REFERENCE_BACKEND:
        precision = _reference_precision(reference, precision)
    else:
        if reference is not None:
            raise ConfigError("reference", f"a reference opens on backend {REFERENCE_BACKEND!r} only, not {backend!r}")
        backend, precision = _choose(manifest, backend, precision)
    start = time.perf_counter()
    if backend == REFERENCE_BACKEND:
        if reference.missing:
            raise MissingDependencyError(reference.missing)
        sessions: dict[str, GraphSession] = dict(reference.open(root, manifest, threads))
    else:
        fmt = backend_info(backend).format
        sessions = {g.name: load_graph_session(root, g, backend, threads) for g in manifest.graphs
                    if g.format == fmt and g.precision == precision}
    load_seconds = time.perf_counter() - start
    return Bundle(root, manifest, backend, precision, sessions, load_seconds, tmp)


def _reference_precision(reference: Reference | None, precision: str) -> str:
    if reference is None:
        raise ConfigError("reference", f"backend {REFERENCE_BACKEND!r} is the model the bundle was exported from: "
                          "pass reference=lugha.export.eager_reference.reference_for(RUN_FOLDER) (or 'config' to "
                          "time the untrained config)")
    if precision not in ("auto", "fp32"):  # rebuilt from a run: fp32 only, whatever the bundle holds
        raise GraphNotInBundleError(f"the {REFERENCE_BACKEND} reference is fp32 only, not {precision}")
    return "fp32"


def _tokenizer(root: Path, manifest: BundleManifest):
    from lugha.tokenizer import load_tokenizer

    return load_tokenizer(root / manifest.tokenizer.file, manifest.tokenizer)


def _as_list(items, single_types: tuple) -> list:
    if isinstance(items, single_types) or (isinstance(items, np.ndarray) and items.ndim == 3):
        return [items]
    return list(items)


class Bundle:
    """A bundle opened on one backend. See :func:`open_bundle`."""

    def __init__(self, root: Path, manifest: BundleManifest, backend: str, precision: str,
                 sessions: dict[str, GraphSession], load_seconds: float, tmp=None):
        self.root, self.manifest, self.backend, self.precision = root, manifest, backend, precision
        self.sessions = sessions
        self.load_seconds = load_seconds  # cold start: engine sessions created, graphs parsed
        self._tmp = tmp  # keeps an extracted zip alive as long as the bundle
        self._tok = None
        self._packs: dict[str, tuple[list[str], np.ndarray]] = {}

    # -- raw graphs -------------------------------------------------------------------------------------
    @property
    def graphs(self) -> dict[str, GraphSpec]:
        return {name: s.spec for name, s in self.sessions.items()}

    def session(self, name: str) -> GraphSession:
        if name not in self.sessions:
            have = ", ".join(g.key for g in self.manifest.graphs)
            raise GraphNotInBundleError(f"no {name} opened on {self.backend}/{self.precision}; bundle has: {have}")
        return self.sessions[name]

    def run_graph(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One raw graph call: contract tensor names in, contract tensor names out (no normalisation)."""
        return self.session(name).run(inputs)

    # -- embeddings -------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tok is None:
            if self.manifest.tokenizer is None:
                raise BundleError("this bundle has no tokenizer (manifest.tokenizer is null): it cannot embed text")
            self._tok = _tokenizer(self.root, self.manifest)
        return self._tok

    def pixel_values(self, images) -> np.ndarray:
        """Model input for paths / PIL images / HWC uint8 arrays, in the image graph's layout."""
        from PIL import Image

        items = _as_list(images, (str, os.PathLike, Image.Image))
        pixels = preprocess_batch(items, self.manifest.preprocess)
        want = _image_layout(self.session("image_encoder").spec)
        have = self.manifest.preprocess.layout
        if want and want != have:  # e.g. an NHWC TFLite graph in a bundle preprocessed NCHW
            pixels = pixels.transpose(0, 2, 3, 1) if want == "NHWC" else pixels.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(pixels)

    def embed_image(self, images, batch_size: int = 32) -> np.ndarray:
        """[N, D] float32, L2-normalised. ``images``: one or a list of paths, PIL images, HWC uint8 arrays."""
        from PIL import Image

        items = _as_list(images, (str, os.PathLike, Image.Image))
        out = [self.run_graph("image_encoder", {"pixel_values": self.pixel_values(items[i:i + batch_size])})
               ["image_embeds"] for i in range(0, len(items), batch_size)]
        return l2_normalize(np.concatenate(out) if out else np.zeros((0, self._dim("image_encoder")), np.float32))

    def embed_text(self, texts: str | Sequence[str], lang: str | None = None, batch_size: int = 64) -> np.ndarray:
        """[N, D] float32, L2-normalised. ``lang`` is accepted for symmetry with classify; the tokenizer
        and its prefix are the same for every language."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer.encode_batch(texts[i:i + batch_size])
            out.append(self.run_graph("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_embeds"])
        return l2_normalize(np.concatenate(out) if out else np.zeros((0, self._dim("text_encoder")), np.float32))

    def _dim(self, name: str) -> int:
        return int(self.session(name).spec.outputs[0].shape[-1])

    # -- labels, classification, search ---------------------------------------------------------------
    def label_languages(self) -> list[str]:
        return sorted(_label_pack_paths(self.manifest))

    def label_pack(self, lang: str) -> tuple[list[str], np.ndarray]:
        """(labels, L2-normalised embeds [N, D]) of a language's precomputed label pack."""
        if lang not in self._packs:
            paths = _label_pack_paths(self.manifest)
            if lang not in paths:
                raise LabelPackError(f"no label pack for language {lang!r}; bundle has: "
                                     f"{', '.join(sorted(paths)) or 'none'}")
            real = resolve_in_bundle(self.root, paths[lang], f"manifest.label_packs.{lang}")  # never outside
            with np.load(real, allow_pickle=False) as z:
                if "labels" not in z or "embeds" not in z:
                    raise LabelPackError(f"{paths[lang]}: needs arrays 'labels' and 'embeds', has {sorted(z)}")
                labels, embeds = [str(s) for s in z["labels"]], z["embeds"].astype(np.float32)
            if embeds.ndim != 2 or embeds.shape[0] != len(labels):
                raise LabelPackError(f"{paths[lang]}: {len(labels)} labels but embeds of shape {embeds.shape}")
            self._packs[lang] = (labels, l2_normalize(embeds))
        return self._packs[lang]

    def classify(self, image=None, text: str | None = None, lang: str = "en", k: int = 5) -> list[tuple[str, float]]:
        """Top-k ``(label, score)``. One of image/text: cosine similarity to the language's label pack.
        Both, with a fusion_head in the bundle: its logits (label names from the pack when sizes agree)."""
        if image is None and text is None:
            raise ConfigError("classify", "pass an image or a text")
        if image is not None and text is not None:
            return self._fuse(image, text, lang, k)
        labels, embeds = self.label_pack(lang)
        query = self.embed_image([image])[0] if image is not None else self.embed_text([text], lang)[0]
        return _top_k(labels, embeds @ query, k)

    def _fuse(self, image, text: str, lang: str, k: int) -> list[tuple[str, float]]:
        if "fusion_head" not in self.sessions:
            raise ConfigError("classify", "pass an image or a text, not both: this bundle has no fusion_head")
        logits = self.fusion_logits([image], [text])[0]
        names = self.session("fusion_head").spec.quantization.get("labels")
        if not names and lang in _label_pack_paths(self.manifest):
            names = self.label_pack(lang)[0]
        if not names or len(names) != len(logits):
            names = [f"class_{i}" for i in range(len(logits))]
        return _top_k(list(names), logits, k)

    def fusion_logits(self, images, texts: Sequence[str]) -> np.ndarray:
        """[N, C] logits of the bundle's fusion head for aligned images and texts. An embedding head reads
        ``image_embeds`` / ``text_embeds``; a cross-attention head reads the encoders' second outputs,
        ``image_patches`` and ``text_tokens``, with ``text_mask`` = the attention mask cut to the tokens."""
        wants = set(self.session("fusion_head").input_names)
        if "image_patches" not in wants:
            return self.run_graph("fusion_head", {"image_embeds": self.embed_image(images),
                                                  "text_embeds": self.embed_text(list(texts))})["logits"]
        image = self.run_graph("image_encoder", {"pixel_values": self.pixel_values(images)})
        ids, mask = self.tokenizer.encode_batch(list(texts))
        text = self.run_graph("text_encoder", {"input_ids": ids, "attention_mask": mask})
        for graph, out, name in (("image_encoder", image, "image_patches"), ("text_encoder", text, "text_tokens")):
            if name not in out:
                raise BundleError(f"{graph} has no {name} output, which this bundle's cross-attention "
                                  "fusion_head reads: re-export the run with `lugha export`")
        tokens = text["text_tokens"]
        return self.run_graph("fusion_head", {"image_patches": image["image_patches"], "text_tokens": tokens,
                                              "text_mask": mask[:, :tokens.shape[1]]})["logits"]

    def search(self, query_embeds: np.ndarray, index: EmbeddingIndex, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], ids [Q, k]) of the nearest index entries by cosine similarity."""
        return index.search(query_embeds, k)

    # -- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Bundle({str(self.root)!r}, model={self.manifest.model.name!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}, graphs={sorted(self.sessions)})")


def _image_layout(spec: GraphSpec) -> str:
    t = next((t for t in spec.inputs if t.name == "pixel_values"), None)
    if t is None:
        return ""
    if t.layout:
        return t.layout
    if len(t.shape) == 4:
        return "NCHW" if t.shape[1] == 3 else "NHWC" if t.shape[3] == 3 else ""
    return ""


def _label_pack_paths(manifest: BundleManifest) -> dict[str, str]:
    """lang -> path: the manifest's ``label_packs`` when it has the field, else ``labels/<lang>.npz`` files."""
    packs = dict(getattr(manifest, "label_packs", None) or {})
    for f in manifest.files:
        p = Path(f.path)
        if len(p.parts) == 2 and p.parts[0] == "labels" and p.suffix == ".npz":
            packs.setdefault(p.stem, f.path)
    return packs


def _top_k(labels: list[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-scores, kind="stable")[:max(int(k), 0)]
    return [(labels[i], float(scores[i])) for i in order]


__all__ = ["open_bundle", "Bundle", "LabelPackError", "ROLES", "load_graph_session", "extract_bundle"]
