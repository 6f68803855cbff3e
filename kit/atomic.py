"""Write-then-rename that survives a crash, a ``kill -9`` and a power cut.

Every file lugha writes for others to read (dataset manifests, check outputs, bundle manifests, fixed
images, logs) goes through here, so none is ever seen half-written:

* the temporary file has a unique name beside the target (two writers never share one, and a stale one
  from a killed run is never mistaken for a live one: it starts with ``.`` and ends ``.tmp``);
* its bytes are ``fsync``-ed before the rename, and the folder after it: without both, a power cut
  on an SD card can leave the new name pointing at an empty file;
* on any failure (disk full, an exception in the writer, Ctrl-C) the temporary file is removed and the
  previous file, if any, is left as it was. A full disk becomes :class:`DiskFullError`, which names the
  file and the free space, not a bare ``OSError``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

from lugha.errors import LughaError

# ENOSPC: disk full; EDQUOT: quota; EFBIG: file-size limit (RLIMIT_FSIZE, FAT32's 4 GiB).
FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


class DiskFullError(LughaError, OSError):
    """A write failed for lack of space (or a size limit); the target was left as it was."""

    def __str__(self) -> str:  # the sentence alone, without OSError's "[Errno 28]"
        return str(self.strerror)


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: hidden, unique per call, ending ``.tmp``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable. A no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) refuse fsync on a folder; the rename still happened
        pass
    finally:
        os.close(fd)


def _full(e: OSError, path: Path) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    why = "file size limit reached" if e.errno == errno.EFBIG else "no space left on the device"
    return DiskFullError(e.errno, f"{path}: not written, {why} ({free}); the previous file, if any, is intact")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (Pillow's ``save``, ``zipfile``); on a clean
    exit it is fsync-ed and renamed onto ``path``, on any error removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as e:
        _remove(tmp)
        if e.errno in FULL_ERRNOS and not isinstance(e, DiskFullError):
            raise _full(e, target) from None
        raise
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False, encoding: str = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` holds either all of it or what it held before."""
    with atomic_path(path) as tmp:
        # O_EXCL: the name is ours alone; 0o666 so the umask, not this module, decides permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline=newline)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, binary=True) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, encoding=encoding) as f:
        f.write(text)


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the finished folder ``new`` at ``target``, replacing what is there, so that at every instant
    (a ``kill -9`` included) ``target`` is either the old complete folder or the new one, or, for the
    moment between two renames, absent with the old one kept aside as ``.<name>.old-<pid>`` for
    :func:`recover_dir` to put back. The old folder is deleted only once the new one is in place."""
    new, target = Path(new), Path(target)
    recover_dir(target)
    aside = None
    if target.exists() or target.is_symlink():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        if aside is not None:
            os.replace(aside, target)
        raise
    fsync_dir(target.parent)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            _remove(aside)


def recover_dir(target: str | os.PathLike) -> bool:
    """After a kill between :func:`replace_dir`'s two renames: put the folder kept aside back at ``target``
    (True when it did). Leftovers beside a ``target`` that exists are older copies and are removed."""
    target = Path(target)
    asides = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not asides:
        return False
    restored = False
    if not (target.exists() or target.is_symlink()):
        os.replace(asides.pop(), target)
        restored = True
    for old in asides:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else _remove(old)
    return restored


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: temp names carry the writer's pid, so a sweep removes only what a
    killed writer left. Another user's process (or a platform that cannot tell) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


__all__ = ["DiskFullError", "FULL_ERRNOS", "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "fsync_dir", "pid_alive", "recover_dir", "replace_dir", "temp_name"]
