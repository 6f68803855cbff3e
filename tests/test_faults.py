"""Issue 17, faults: a full disk and a ``kill -9`` at the worst moment, against the real writers.

The full disk is a real one: a 64 kB (or bundle-sized) tmpfs mounted in a user + mount namespace
(``unshare -rm``, no privileges needed where user namespaces are allowed). Where they are not, the child
runs under ``RLIMIT_FSIZE`` instead, which fails the same writes with EFBIG: the same code paths, so the
suite never skips. Each scenario runs in a child process that reports what it saw as JSON, because the
tmpfs vanishes with the child's namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lugha.manifest import load_bundle_manifest

REPO = Path(__file__).resolve().parents[1]


def _tmpfs_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                           capture_output=True)
    return probe.returncode == 0


TMPFS = _tmpfs_works()


def run_on_small_disk(script: str, size: int, folder: Path, timeout: float = 600) -> dict:
    """Run ``script`` (Python; ``DISK`` is the small file system's folder; it prints one JSON line last)
    with at most ``size`` bytes of room in ``folder``: a tmpfs there, or RLIMIT_FSIZE on every file."""
    folder.mkdir(parents=True, exist_ok=True)
    code = f"DISK = {str(folder)!r}\n" + textwrap.dedent(script)
    if TMPFS:
        cmd = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && exec "$@"', "sh",
               str(folder), sys.executable, "-c", code]
        preexec = None
    else:
        cmd = [sys.executable, "-c", code]

        def preexec():
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = done.stdout.strip().splitlines()
    assert lines, f"child printed nothing (rc {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])


LISTING = """
import json, os
def listing():
    return sorted(os.path.relpath(os.path.join(d, f), DISK) for d, _, fs in os.walk(DISK) for f in fs) + \\
        sorted(os.path.relpath(os.path.join(d, s), DISK) + "/" for d, ss, _ in os.walk(DISK) for s in ss)
"""


def test_write_manifest_on_a_full_disk_keeps_the_previous_one_and_names_the_cause(tmp_path):
    result = run_on_small_disk(LISTING + """
from lugha.records import Record, write_manifest
path = os.path.join(DISK, "manifest.jsonl")
write_manifest(path, [Record(id="old", image="a.jpg", text="zamani", lang="sw")])
try:
    write_manifest(path, [Record(id=f"r{i}", image="a.jpg", text="maandishi " * 20, lang="sw") for i in range(2000)])
    error = None
except Exception as e:
    error = [type(e).__name__, str(e)]
print(json.dumps({"error": error, "files": listing(), "text": open(path, encoding="utf-8").read()}))
""", 64 << 10, tmp_path / "disk")
    assert result["error"] and result["error"][0] == "DiskFullError", result
    assert "the previous file, if any, is intact" in result["error"][1]
    assert result["files"] == ["manifest.jsonl"]  # no temp file left to fill the card further
    assert json.loads(result["text"])["id"] == "old"


def test_data_check_on_a_full_disk_exits_with_one_clear_line(tmp_path):
    import bad_images as bi

    src = tmp_path / "data"
    src.mkdir()
    bi.good_jpeg(src / "a.jpg")
    lines = [json.dumps({"id": f"r{i}", "image": "a.jpg", "text": "picha " * 60, "lang": "sw"}) for i in range(2000)]
    (src / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_on_small_disk(LISTING + f"""
import contextlib, io, sys
from lugha.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        rc = main(["data", "check", {str(src / "m.jsonl")!r}, "--workers", "1", "--min-per-split", "0",
                   "--out", os.path.join(DISK, "clean.jsonl"), "--skipped", os.path.join(DISK, "skipped.jsonl")])
    except BaseException as e:
        rc = repr(e)
print(json.dumps({{"rc": rc, "err": err.getvalue(), "files": listing()}}))
""", 64 << 10, tmp_path / "disk")
    assert result["rc"] == 1, result
    assert "lugha data: error: " in result["err"] and "clean.jsonl: not written" in result["err"] and ("no space left" in result["err"]
                                                            or "file size limit" in result["err"])
    assert [f for f in result["files"] if f.endswith(".tmp")] == []


# --- export ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_and_bundle(demo_small, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained run and a bundle exported from it (the 'previous bundle' of the tests below)."""
    from lugha.cli import main
    from lugha.training.train_config import load_train_config
    from lugha.training.trainer import train

    root = tmp_path_factory.mktemp("faults")
    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml", [
        f"data.manifest={demo_small}", f"data.cache_dir={root / 'cache'}", "data.languages=[en, sw]",
        "data.batch_size=16", "loop.epochs=1", "model_overrides.adapter.kind=projection"])
    train(cfg, root / "run", show_progress=False, say=lambda m: None)
    assert main(EXPORT + [str(root / "run"), "--out", str(root / "bundle")]) == 0
    return root / "run", root / "bundle"


# fp32 ONNX only, the faster legacy exporter, few eval items: the file writing is under test, not the graphs
EXPORT = ["export", "--precision", "fp32", "--allow-drop", "--eval-limit", "8", "--legacy-onnx"]


def bundle_size(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


@pytest.mark.slow
def test_export_on_a_full_disk_leaves_no_partial_bundle_and_says_why(run_and_bundle, tmp_path):
    run, previous = run_and_bundle
    size = bundle_size(previous)
    export = LISTING + f"""
import contextlib, io
from lugha.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
        rc = main({json.dumps(EXPORT)} + [{str(run)!r}, "--out", os.path.join(DISK, "bundle"), "--zip"])
    except BaseException as e:
        rc = repr(e)
print(json.dumps({{"rc": rc, "err": err.getvalue()[-2000:], "files": listing()}}))
"""
    # room for a third of the bundle: the staging folder fills up
    result = run_on_small_disk(export, size // 3, tmp_path / "small")
    assert result["rc"] == 1, result
    err = result["err"].lower()
    assert "lugha export: error:" in err and ("no space left on" in err or "file too large" in err), err
    assert "traceback" not in err
    assert result["files"] == [], result["files"]  # no bundle, no hidden .bundle.partial-*, nothing
    if TMPFS:  # room for the bundle but not for its zip too: the bundle stands, no half zip beside it
        result = run_on_small_disk(export, size + size // 2, tmp_path / "medium")
        assert result["rc"] == 1 and "no space left on the device" in result["err"], result
        assert not [f for f in result["files"] if "zip" in f or "partial" in f or f.endswith(".tmp")], result["files"]
        assert "bundle/manifest.json" in result["files"]


def _manifest_bytes(bundle: Path) -> bytes:
    load_bundle_manifest(bundle, verify=True)  # complete: every file present with its SHA-256
    return (bundle / "manifest.json").read_bytes()


@pytest.mark.slow
def test_kill_9_during_export_leaves_the_previous_bundle_intact(run_and_bundle, tmp_path):
    run, previous = run_and_bundle
    out = Path(shutil.copytree(previous, tmp_path / "bundle"))
    before = _manifest_bytes(out)
    child = subprocess.Popen([sys.executable, "-m", "lugha.cli", *EXPORT, str(run), "--out", str(out), "--overwrite"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(p.is_file() for s in tmp_path.glob(".bundle.partial-*") for p in s.rglob("*")):
        assert child.poll() is None and time.monotonic() < deadline, "export ended before writing its bundle"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # mid-build: graphs half written in the staging folder
    child.wait()
    assert _manifest_bytes(out) == before


@pytest.mark.slow
def test_kill_9_at_the_moment_the_old_bundle_goes_leaves_a_complete_bundle(run_and_bundle, tmp_path):
    """The worst moment: the old bundle has just been removed or moved aside, the new one not yet in place.
    The child kills itself there (as kill -9 would), whichever way this code swaps folders."""
    run, previous = run_and_bundle
    out = Path(shutil.copytree(previous, tmp_path / "bundle"))
    before = _manifest_bytes(out)
    code = f"""
import os, shutil, signal, sys
OUT = {str(out)!r}
def die_after(fn):
    def wrapped(src, *a, **k):
        result = fn(src, *a, **k)
        if os.fspath(src) == OUT:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped
shutil.rmtree, os.replace, os.rename = die_after(shutil.rmtree), die_after(os.replace), die_after(os.rename)
from lugha.cli import main
sys.exit(main({json.dumps(EXPORT)} + [{str(run)!r}, "--out", OUT, "--overwrite"]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    # a complete copy of the previous bundle survives: in place, or kept aside for the next export
    kept = [c for c in [out, *tmp_path.glob(".bundle.old-*")] if (c / "manifest.json").is_file()]
    assert [_manifest_bytes(c) for c in kept] == [before], "the previous bundle is gone"
    from lugha.atomic import recover_dir
    from lugha.errors import MissingFileError

    if not out.exists():  # killed between the two renames: the reader is told where the old bundle is
        with pytest.raises(MissingFileError, match=r"interrupted export left the previous bundle at .*\.bundle\.old-"):
            load_bundle_manifest(out)

    recover_dir(out)  # what the next export (or replace_dir) does first
    assert _manifest_bytes(out) == before
    assert not list(tmp_path.glob(".bundle.old-*"))


# --- what every write-then-rename does ---------------------------------------------------------------------

def test_every_rename_is_fsynced_file_and_folder_with_a_unique_temp_name(tmp_path, monkeypatch):
    """records, check outputs and bundle manifests: the bytes and the folder entry reach the card before
    the rename counts (else a power cut can leave the new name on an empty file)."""
    import stat as st

    import bad_images as bi
    from lugha.data.check import CheckOptions, check_manifest
    from lugha.manifest import read_manifest_json, write_manifest as write_bundle_manifest
    from lugha.records import Record, write_manifest
    from test_runtimes_bundle import make_tiny_bundle

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append("dir" if st.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    names: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: names.append(Path(src).name) or real_replace(src, dst))
    write_manifest(tmp_path / "m.jsonl", [Record(id="a", image="a.jpg", text="x", lang="sw")])
    assert "file" in synced and "dir" in synced
    assert oct((tmp_path / "m.jsonl").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as open() would
    synced.clear()
    bi.good_jpeg(tmp_path / "a.jpg")
    check_manifest(tmp_path / "m.jsonl", CheckOptions(workers=1, min_per_split=0))
    assert synced.count("dir") >= 2 and synced.count("file") >= 2  # clean + skipped
    bundle = make_tiny_bundle(tmp_path / "bundle", int8=False)
    synced.clear()
    write_bundle_manifest(bundle, read_manifest_json(bundle))
    assert "file" in synced and "dir" in synced
    assert len(names) == len(set(names)) and all(n.startswith(".") and n.endswith(".tmp") for n in names), names


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
