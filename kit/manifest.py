"""The bundle manifest: what a bundle folder holds, typed, hashed and checked before anything runs.

A bundle is a folder with ``manifest.json`` beside the files it lists. Loading refuses, with a one-line
error naming the file, anything that would make a device run something other than what was exported:
an unknown schema version, a path that leaves the folder, a missing file, a size or SHA-256 mismatch.
Unknown fields are refused too (``ConfigError`` naming the field path), so a manifest written by a newer
lugha never loses information silently.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator, Literal

from lugha import __version__
from lugha.atomic import atomic_write_text
from lugha._schema import from_dict, to_dict
from lugha.config import ModelConfig
from lugha.errors import BundleError, ChecksumError, ConfigError, MissingFileError, SchemaVersionError, UnsafePathError
from lugha.gate_report import AccuracyGate
from lugha.hashing import is_sha256_hex, sha256_file
from lugha.preprocess import PreprocessSpec
from lugha.progress import progress
from lugha.tokenizer import TokenizerSpec
from lugha.vocabulary import GraphFormat, Precision, metric_key

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

TensorDtype = Literal["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle. ``size``/``sha256`` are filled in by :func:`write_manifest`."""

    path: str
    size: int = -1
    sha256: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output. ``shape`` mixes ints and named dynamic dims: ``["batch", 3, 224, 224]``.
    ``layout``: ``NCHW``/``NHWC`` for images, ``""`` otherwise."""

    name: str
    dtype: TensorDtype
    shape: tuple[int | str, ...]
    layout: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        for i, d in enumerate(self.shape):
            if isinstance(d, str) and not d.isidentifier():
                raise ConfigError(f"shape[{i}]", f"a dynamic dim must be a name like 'batch', got {d!r}")
            if isinstance(d, int) and d <= 0:
                raise ConfigError(f"shape[{i}]", f"a static dim must be positive, got {d}")


@dataclass(frozen=True)
class GoldenSample:
    """Reference inputs and outputs (``.npz``, keyed by tensor name) that a runtime must reproduce."""

    inputs: str
    outputs: str


@dataclass(frozen=True)
class Tolerance:
    """How close a runtime's outputs must be to the golden outputs. ``int8_steps``: allowed difference in
    quantisation steps for int8/uint8 outputs."""

    max_abs: float = 1e-4
    min_cosine: float = 0.999
    int8_steps: int = 1

    def __post_init__(self) -> None:
        if not self.max_abs >= 0:
            raise ConfigError("max_abs", f"must be >= 0, got {self.max_abs}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigError("min_cosine", f"must be in [-1, 1], got {self.min_cosine}")
        if self.int8_steps < 0:
            raise ConfigError("int8_steps", f"must be >= 0, got {self.int8_steps}")


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph. ``name`` is its role (:data:`lugha.vocabulary.GRAPH_ROLES`); ``(name, format,
    precision)`` is unique within a bundle. ``quantization``: free-form details
    (scheme, calibration set size, per-channel...), recorded for the reader, not interpreted."""

    name: str
    format: GraphFormat
    precision: Precision
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    quantization: dict[str, Any] = field(default_factory=dict)
    golden: GoldenSample | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def key(self) -> str:
        return f"{self.name}/{metric_key(self.format, self.precision)}"


@dataclass(frozen=True)
class BundleManifest:
    """``metrics``: candidate -> language -> metric -> value, the candidate keyed by
    :func:`lugha.vocabulary.metric_key` (e.g. ``{"onnx/int8": {"yo": {"i2t_r1": 0.41}}}``; ``torch/fp32`` is the
    PyTorch reference; read them with :func:`lugha.vocabulary.metrics_of`).
    ``accuracy_gate``: every paired comparison the export's accuracy gate decided, and whether
    ``--allow-drop`` overrode it (None: a bundle written without the gate, e.g. by hand)."""

    model: ModelConfig
    graphs: tuple[GraphSpec, ...]
    tokenizer: TokenizerSpec | None = None
    files: tuple[FileEntry, ...] = ()
    languages: tuple[str, ...] = ()
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # lang -> labels/<lang>.npz: precomputed label/prompt embeddings (arrays ``labels``, ``embeds``)
    label_packs: dict[str, str] = field(default_factory=dict)
    accuracy_gate: AccuracyGate | None = None
    schema_version: int = SCHEMA_VERSION
    lugha_version: str = __version__

    def __post_init__(self) -> None:
        for name in ("graphs", "files", "languages"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def preprocess(self) -> PreprocessSpec:
        """How images become the image graph's input: the model's own record (``model.preprocess``), the
        one preprocessing record a bundle holds."""
        return self.model.preprocess

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BundleManifest":
        if not isinstance(data, dict) or "preprocess" not in data:
            return from_dict(cls, data, "manifest")
        data = dict(data)
        legacy = data.pop("preprocess")
        m = from_dict(cls, data, "manifest")
        _check_legacy_preprocess(from_dict(PreprocessSpec, legacy, "manifest.preprocess"), m.model.preprocess)
        return m

    def replace(self, **changes) -> "BundleManifest":
        return dataclasses.replace(self, **changes)

    def graph(self, name: str, format: str | None = None, precision: str | None = None) -> GraphSpec:
        """The one graph with this role (and format/precision, when the bundle holds several)."""
        hits = [g for g in self.graphs if g.name == name and format in (None, g.format)
                and precision in (None, g.precision)]
        if len(hits) != 1:
            have = ", ".join(g.key for g in self.graphs) or "none"
            what = "/".join(str(x) for x in (name, format, precision) if x)
            raise BundleError(f"{'no' if not hits else 'more than one'} graph matches {what}; bundle has: {have}")
        return hits[0]

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise MissingFileError(f"{path}: not listed in {MANIFEST_NAME}")

    @property
    def total_bytes(self) -> int:
        return sum(max(f.size, 0) for f in self.files)

    def referenced_paths(self) -> Iterator[tuple[str, str]]:
        """``(field path, file path)`` of every file the manifest refers to outside ``files``."""
        if self.tokenizer is not None:
            yield "manifest.tokenizer.file", self.tokenizer.file
        for i, g in enumerate(self.graphs):
            yield f"manifest.graphs[{i}].file", g.file
            if g.golden is not None:
                yield f"manifest.graphs[{i}].golden.inputs", g.golden.inputs
                yield f"manifest.graphs[{i}].golden.outputs", g.golden.outputs
        # label packs are served to phones and loaded by the runtime: path-checked and hashed like the rest
        for lang, path in sorted(self.label_packs.items()):
            yield f"manifest.label_packs.{lang}", path


def _check_legacy_preprocess(legacy: PreprocessSpec, model: PreprocessSpec) -> None:
    """Bundles written before the manifest held one preprocessing record carry a second copy at the top:
    read it only to refuse a bundle whose two copies disagree (which one would a device follow?)."""
    if legacy != model:
        diffs = [f"{f.name} {getattr(legacy, f.name)!r} vs {getattr(model, f.name)!r}"
                 for f in dataclasses.fields(PreprocessSpec) if getattr(legacy, f.name) != getattr(model, f.name)]
        raise ConfigError("manifest.preprocess", "differs from manifest.model.preprocess, the bundle's preprocessing "
                          f"record: {'; '.join(diffs)}")


# --- paths -------------------------------------------------------------------------------------------

def check_relative_path(path: str, where: str = "") -> str:
    """A manifest path must be relative, use ``/``, and never climb out with ``..``."""
    label = f"{where}: " if where else ""
    if not path or "\x00" in path or "\\" in path:
        raise UnsafePathError(f"{label}{path!r} is not a plain relative path with '/' separators")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).drive:
        raise UnsafePathError(f"{label}{path!r} is absolute; bundle paths are relative to the bundle folder")
    parts = PurePosixPath(path).parts
    if ".." in parts or parts in ((), (".",)):
        raise UnsafePathError(f"{label}{path!r} leaves the bundle folder")
    return path


def resolve_in_bundle(bundle_dir: str | os.PathLike, path: str, where: str = "") -> Path:
    """The real location of a bundle file; refuses one that leaves the folder, symlinks included."""
    check_relative_path(path, where)
    root = Path(bundle_dir).resolve()
    real = (root / path).resolve()
    if real != root and root not in real.parents:
        raise UnsafePathError(f"{where + ': ' if where else ''}{path!r} leads outside the bundle folder (to {real})")
    return real


# --- validation --------------------------------------------------------------------------------------

def validate_manifest(m: BundleManifest) -> None:
    """Structural and referential checks that need no file access."""
    if m.schema_version != SCHEMA_VERSION:
        raise SchemaVersionError(f"schema_version {m.schema_version} is not {SCHEMA_VERSION}")
    seen: dict[str, int] = {}
    for i, f in enumerate(m.files):
        where = f"manifest.files[{i}].path"
        check_relative_path(f.path, where)
        if f.path == MANIFEST_NAME:
            raise ConfigError(where, f"{MANIFEST_NAME} cannot list itself")
        if f.path in seen:
            raise ConfigError(where, f"{f.path!r} is listed twice (also files[{seen[f.path]}])")
        seen[f.path] = i
    for where, path in m.referenced_paths():
        check_relative_path(path, where)
        if path not in seen:
            raise ConfigError(where, f"{path!r} is not listed in manifest.files")
    keys: dict[str, int] = {}
    for i, g in enumerate(m.graphs):
        if g.key in keys:
            raise ConfigError(f"manifest.graphs[{i}]", f"{g.key} duplicates graphs[{keys[g.key]}]")
        keys[g.key] = i


def _check_entries(m: BundleManifest) -> None:
    """Sizes and hashes are well-formed (a loaded manifest must have been written by write_manifest)."""
    for i, f in enumerate(m.files):
        if f.size < 0:
            raise ConfigError(f"manifest.files[{i}].size", f"must be >= 0, got {f.size} ({f.path})")
        if not is_sha256_hex(f.sha256):
            raise ConfigError(f"manifest.files[{i}].sha256", f"not a lowercase hex SHA-256 ({f.path})")


def verify_files(bundle_dir: str | os.PathLike, m: BundleManifest, show_progress: bool = False,
                 ) -> list[BundleError]:
    """Every problem with the listed files (empty when the bundle is intact): path escapes, missing
    files, size and SHA-256 mismatches. Sizes are checked first so a truncated file costs no hashing."""
    problems: list[BundleError] = []
    to_hash: list[tuple[FileEntry, Path]] = []
    for f in m.files:
        try:
            real = resolve_in_bundle(bundle_dir, f.path)
        except UnsafePathError as e:
            problems.append(e)
            continue
        if not real.is_file():
            problems.append(MissingFileError(f"{f.path}: listed in {MANIFEST_NAME} but missing from the bundle"))
            continue
        size = real.stat().st_size
        if size != f.size:
            problems.append(ChecksumError(f"{f.path}: size {size} bytes, manifest says {f.size}"))
            continue
        to_hash.append((f, real))
    items = progress(to_hash, desc="sha256") if show_progress else to_hash
    for f, real in items:
        digest = sha256_file(real)
        if digest != f.sha256:
            problems.append(ChecksumError(f"{f.path}: SHA-256 {digest[:12]}... differs from the manifest's "
                                          f"{f.sha256[:12]}..."))
    return problems


# --- read / write ------------------------------------------------------------------------------------

MAX_MANIFEST_BYTES = 64 << 20  # real manifests are tens of kB (hundreds with many gate cells)

def bundle_root(path: str | os.PathLike) -> Path:
    """The bundle folder, given the folder or its manifest.json."""
    p = Path(path)
    return p.parent if p.name == MANIFEST_NAME and p.is_file() else p


def read_manifest_json(bundle_dir: str | os.PathLike) -> BundleManifest:
    """Parse and type-check manifest.json without touching the files it lists."""
    path = bundle_root(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        aside = [] if path.parent.exists() else sorted(path.parent.parent.glob(f".{path.parent.name}.old-*"))
        raise MissingFileError(f"{path}: no {MANIFEST_NAME}" + (f"; an interrupted export left the previous bundle "
                               f"at {aside[-1]}: rename it back" if aside else " (is this a bundle folder?)"))
    if path.stat().st_size > MAX_MANIFEST_BYTES:  # a bundle is input from elsewhere: never read a huge one whole
        raise BundleError(f"{path}: {path.stat().st_size:,} bytes > {MAX_MANIFEST_BYTES:,}; not a lugha manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:  # [[[[... deep enough to exhaust the parser
        raise BundleError(f"{path}: JSON nested too deep to parse (malformed_json)") from None
    if not isinstance(data, dict):
        raise ConfigError("manifest", f"expected an object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        hint = "written by a newer lugha; upgrade lugha" if newer else "not a lugha bundle manifest"
        raise SchemaVersionError(f"{path}: schema_version {version!r}; lugha {__version__} reads "
                                 f"{SCHEMA_VERSION} ({hint})")
    m = BundleManifest.from_dict(data)
    validate_manifest(m)
    _check_entries(m)
    return m


def load_bundle_manifest(bundle_dir: str | os.PathLike, verify: bool = True) -> BundleManifest:
    """Read and check a bundle's manifest; with ``verify`` also every file's presence, size and SHA-256.
    Raises the first problem found (see :func:`verify_files` for all of them)."""
    root = bundle_root(bundle_dir)
    m = read_manifest_json(root)
    if verify:
        problems = verify_files(root, m)
        if problems:
            raise problems[0]
    else:  # still refuse paths that escape, so a later open() of a graph file is safe
        for where, path in [(f"manifest.files[{i}].path", f.path) for i, f in enumerate(m.files)]:
            resolve_in_bundle(root, path, where)
    return m


def list_bundle_files(bundle_dir: str | os.PathLike) -> list[str]:
    """Every regular file under the folder (except manifest.json), as sorted ``/`` relative paths."""
    root = Path(bundle_dir)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                resolve_in_bundle(root, rel, "bundle folder")  # a symlink out of the folder is refused
                out.append(rel)
    return sorted(out)


def add_all_files(bundle_dir: str | os.PathLike, m: BundleManifest) -> BundleManifest:
    """The manifest with ``files`` listing every file under the folder (sizes/hashes filled on write)."""
    known = {f.path for f in m.files}
    extra = [FileEntry(p) for p in list_bundle_files(bundle_dir) if p not in known]
    return m.replace(files=tuple(m.files) + tuple(extra))


def write_manifest(bundle_dir: str | os.PathLike, m: BundleManifest, show_progress: bool = False,
                   ) -> BundleManifest:
    """Hash every listed file (plus any graph, golden or tokenizer file not yet listed), write
    manifest.json atomically and return the completed manifest."""
    root = Path(bundle_dir)
    listed = [f.path for f in m.files]
    listed += [p for _, p in m.referenced_paths() if p not in listed]
    entries = []
    paths = progress(listed, desc="sha256") if show_progress else listed
    for i, rel in enumerate(paths):
        real = resolve_in_bundle(root, rel, f"manifest.files[{i}].path")
        if not real.is_file():
            raise MissingFileError(f"{rel}: listed for the bundle but not found in {root}")
        entries.append(FileEntry(rel, real.stat().st_size, sha256_file(real)))
    done = m.replace(files=tuple(entries), schema_version=SCHEMA_VERSION)
    validate_manifest(done)
    data = done.to_dict()
    data = {k: data.pop(k) for k in ("schema_version", "lugha_version")} | data  # version first, for readers
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(root / MANIFEST_NAME, text)  # fsync'd temp + rename: a crash never leaves half a manifest
    return done


__all__ = [
    "SCHEMA_VERSION", "MANIFEST_NAME", "FileEntry", "TensorSpec", "GoldenSample", "Tolerance", "GraphSpec",
    "BundleManifest", "bundle_root", "check_relative_path", "resolve_in_bundle", "validate_manifest", "verify_files",
    "read_manifest_json", "load_bundle_manifest", "list_bundle_files", "add_all_files", "write_manifest",
]
