"""Zipped bundles: the central directory judged before a byte is extracted, extraction within limits, and
no temporary copy left behind, whatever happens.

A bundle zip is copied from a laptop to a Pi by hand, so it is input, not code we wrote:

* before extracting, every central-directory entry is checked: a plain relative path (no zip-slip, no
  absolute or drive paths, no duplicates that would let two manifests hide behind one name), no
  symlinks, at most :attr:`ZipLimits.max_members` entries, and declared sizes within the total and
  per-file limits and a plausible compression ratio (a zip bomb is refused by its own header);
* members are then copied out in chunks, counting bytes, so a header that lies about sizes is caught;
* the temporary folder is removed on every failure, and named with the process id, so folders left by a
  ``kill -9`` (which no ``finally`` survives) are removed by the next extraction once their process is gone.
"""
from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lugha.atomic import pid_alive
from lugha.errors import BundleError, UnsafePathError
from lugha.manifest import MANIFEST_NAME, check_relative_path

PREFIX = "lugha-bundle-"


class ZipBundleError(BundleError):
    """A bundle zip refused before (or while) extracting: too big, too many files, a bomb, a bad path."""


@dataclass(frozen=True)
class ZipLimits:
    max_total_bytes: int = 4 << 30  # 4 GiB: the largest fp32 bundles are a few hundred MB
    max_member_bytes: int = 2 << 30
    max_members: int = 10_000
    max_ratio: float = 200.0  # uncompressed / compressed; graphs and npz compress 1.1-10x, a bomb 1000x
    ratio_floor: int = 1 << 20  # members smaller than this may compress as well as they like


def check_central_directory(z: zipfile.ZipFile, name: str, limits: ZipLimits = ZipLimits()) -> list[zipfile.ZipInfo]:
    """The regular-file members of ``z``, after every entry passed the checks above (or ZipBundleError)."""
    infos = z.infolist()
    if len(infos) > limits.max_members:
        raise ZipBundleError(f"{name}: {len(infos):,} entries > limit {limits.max_members:,}; refused")
    seen: set[str] = set()
    total, files = 0, []
    for info in infos:
        where = f"{name} member {info.filename!r}"
        if info.is_dir():
            check_relative_path(info.filename.rstrip("/"), f"{name} member")
            continue
        check_relative_path(info.filename, f"{name} member")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafePathError(f"{where} is a symbolic link; bundles hold plain files only")
        if info.filename in seen:
            raise ZipBundleError(f"{where} appears twice; refused (which copy is the real one?)")
        seen.add(info.filename)
        if info.file_size > limits.max_member_bytes:
            raise ZipBundleError(f"{where}: {info.file_size:,} bytes > limit {limits.max_member_bytes:,}")
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ZipBundleError(f"{where}: {info.compress_size:,} bytes inflate to {info.file_size:,} "
                                 f"(> {limits.max_ratio:.0f}x); refused as a zip bomb")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ZipBundleError(f"{name}: members add up to more than {limits.max_total_bytes:,} bytes; refused")
        files.append(info)
    return files


def manifest_member(names: list[str]) -> str:
    """The member holding manifest.json: at the top, or in the one folder the zip holds (zipping the folder
    itself is as common as zipping its contents)."""
    if MANIFEST_NAME in names:
        return MANIFEST_NAME
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST_NAME}" in names:
        return f"{next(iter(tops))}/{MANIFEST_NAME}"
    raise BundleError(f"no {MANIFEST_NAME} at the top of the zip or in its one folder (is this a bundle?)")


def sweep_stale(tmp_root: str | os.PathLike | None = None, prefix: str = PREFIX) -> int:
    """Remove folders (and files) ``<prefix><pid>-*`` whose process is gone (a ``kill -9`` skips every
    cleanup): this module's extraction folders, or (``prefix=``) export's staging and scratch folders and
    its zip's temp file; returns how many."""
    root = Path(tmp_root or tempfile.gettempdir())
    removed = 0
    for d in root.glob(f"{glob.escape(prefix)}*-*"):
        pid = d.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)) or d.is_symlink():
            continue
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)
        removed += 1
    return removed


def extract_bundle(path: str | os.PathLike, limits: ZipLimits = ZipLimits()
                   ) -> tuple[tempfile.TemporaryDirectory, Path]:
    """A zipped bundle extracted to a temporary folder (checked first, copied within limits), and the folder
    in it that holds manifest.json. The caller owns the TemporaryDirectory; on failure nothing is left."""
    path = Path(path)
    sweep_stale()
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ZipBundleError(f"{path}: not a readable zip ({e})") from None
    with z:
        files = check_central_directory(z, path.name, limits)
        inner = manifest_member([i.filename for i in files])
        tmp = tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")
        try:
            for info in files:
                _copy_member(z, info, Path(tmp.name), path.name, limits)
        except BaseException:
            tmp.cleanup()
            raise
    root = Path(tmp.name)
    return tmp, (root / inner).parent


def _copy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, name: str, limits: ZipLimits) -> None:
    out = dest / info.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with z.open(info) as src, open(out, "xb") as f:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > info.file_size or written > limits.max_member_bytes:
                    raise ZipBundleError(f"{name} member {info.filename!r} inflates past its declared "
                                         f"{info.file_size:,} bytes; refused")
                f.write(chunk)
    except (zipfile.BadZipFile, EOFError, ValueError) as e:  # bad CRC, truncated data, bad compression
        raise ZipBundleError(f"{name} member {info.filename!r}: {type(e).__name__}: {e}") from None


__all__ = ["ZipBundleError", "ZipLimits", "check_central_directory", "extract_bundle", "manifest_member", "sweep_stale"]
