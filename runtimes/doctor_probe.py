"""Reading this machine for ``lugha doctor`` (the verdicts are in :mod:`lugha.runtimes.doctor`).

Each engine is imported in a child interpreter with a timeout: an engine can crash the interpreter at
import (ONNX Runtime on ARM when /proc/cpuinfo has no "CPU part", as under an emulator or in some
containers) or hang, and either must become a line in the report, not the end of the check.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from lugha.runtimes.backends import AUTO_ORDER, BACKENDS
from lugha.runtimes.doctor import BackendProbe, BundleFacts, MachineFacts, parse_cpuinfo, parse_meminfo

DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "tflite": "tflite-runtime"}

# Run in a child interpreter (and in this one when no child can start): imports the engine, reports.
_PROBE = r"""
def probe(module):
    import importlib, time
    start = time.perf_counter()
    mod = importlib.import_module(module)
    out = {"version": getattr(importlib.import_module(module.split(".")[0]), "__version__", "")}
    if hasattr(mod, "get_available_providers"):
        out["providers"] = list(mod.get_available_providers())
    import numpy
    out.update(numpy=numpy.__version__, seconds=time.perf_counter() - start)
    return out
"""
_MAIN = "import json, sys\nprint('LUGHA_PROBE ' + json.dumps(probe(sys.argv[1])))"


def probe_backend(name: str, timeout: float = 120.0) -> BackendProbe:
    """Import one engine in a child interpreter, so a crash or a hang is a verdict, not the end of doctor."""
    import importlib.util

    module = BACKENDS[name].module
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return BackendProbe(name, False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    how = "subprocess"
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE + _MAIN, module], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return BackendProbe(name, True, error=f"import did not finish in {timeout:.0f}s", seconds=timeout)
    except OSError:  # no child can start (qemu-user without binfmt): import here, and hope
        how, space = "in-process", {}
        exec(_PROBE, space)
        try:
            got = space["probe"](module)
        except Exception as e:  # ImportError, or a wheel built against another numpy ABI
            return BackendProbe(name, True, error=f"{type(e).__name__}: {e}"[:200], how=how)
    else:
        line = next((x for x in proc.stdout.splitlines() if x.startswith("LUGHA_PROBE ")), None)
        if proc.returncode < 0:
            sig = -proc.returncode
            return BackendProbe(name, True, error=signal.Signals(sig).name if sig in signal.valid_signals()
                                else f"signal {sig}", crashed=True)
        if proc.returncode != 0 or line is None:
            return BackendProbe(name, True, error=(proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200])
        got = json.loads(line[len("LUGHA_PROBE "):])
    version = got["version"] or _dist_version(DISTRIBUTIONS[name])
    return BackendProbe(name, True, version, tuple(got.get("providers", ())), got["numpy"], seconds=got["seconds"],
                        how=how)


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def installed_wheels(dists=("onnxruntime", "ai-edge-litert", "tflite-runtime", "numpy", "tokenizers", "pillow")) -> dict:
    """Version and platform tags of each installed distribution (from its WHEEL file)."""
    out = {}
    for dist in dists:
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        tags = re.findall(r"^Tag:\s*(\S+)", d.read_text("WHEEL") or "", re.M)
        out[dist] = {"version": d.version, "tags": [t.split("-")[-1] for t in tags]}
    return out


def bundle_facts(path: str | os.PathLike, pubkey: str | os.PathLike | None = None) -> BundleFacts:
    """The manifest, every file's SHA-256 verified (a zip extracted, within limits, to a temporary folder
    first); with ``pubkey`` or trusted keys configured, the signature too (see lugha.runtimes.signature)."""
    from lugha.errors import LughaError
    from lugha.manifest import load_bundle_manifest
    from lugha.runtimes.bundle_zip import extract_bundle
    from lugha.runtimes.signature import check_bundle_trust, is_zip_bundle

    src, tmp = Path(path), None
    try:
        signer = check_bundle_trust(src, pubkey)
        if is_zip_bundle(src):
            tmp, src = extract_bundle(src)
        m = load_bundle_manifest(src, verify=True)
    except (LughaError, OSError) as e:
        return BundleFacts(str(path), error=str(e) or type(e).__name__)
    finally:
        if tmp is not None:
            tmp.cleanup()
    sizes = {f.path: f.size for f in m.files}
    graphs = tuple({"key": g.key, "name": g.name, "format": g.format, "precision": g.precision,
                    "bytes": sizes.get(g.file, 0)} for g in m.graphs)
    tokenizer = sizes.get(m.tokenizer.file, 0) if m.tokenizer is not None else 0
    return BundleFacts(str(path), graphs=graphs, total_bytes=m.total_bytes, tokenizer_bytes=tokenizer,
                       signed_by=str(signer or ""))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _libc() -> tuple[str, str]:
    try:  # confstr asks the C library itself; libc_ver() greps the python binary
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        if name == "glibc":
            return name, version
    except (AttributeError, ValueError, OSError):
        pass
    return tuple(platform.libc_ver()) if sys.platform.startswith("linux") else ("", "")


def gather_facts(bundle: str | os.PathLike | None = None, timeout: float = 120.0,
                 pubkey: str | os.PathLike | None = None) -> MachineFacts:
    machine = platform.machine()
    disk_path = str(Path(bundle).resolve().parent if bundle and Path(bundle).is_file() else Path(bundle or "."))
    try:
        disk_free = shutil.disk_usage(disk_path).free
    except OSError:
        disk_free = None
    with ThreadPoolExecutor(len(AUTO_ORDER)) as pool:  # children import in parallel: slow boards wait once
        probes = dict(zip(AUTO_ORDER, pool.map(lambda n: probe_backend(n, timeout), AUTO_ORDER)))
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = ""
    return MachineFacts(
        machine=machine, pointer_bits=struct.calcsize("P") * 8, cpu=parse_cpuinfo(_read("/proc/cpuinfo"), machine),
        mem_available=parse_meminfo(_read("/proc/meminfo")), libc=_libc(), python=platform.python_version(),
        numpy=numpy_version, disk_free=disk_free, disk_path=disk_path, wheels=installed_wheels(),
        backends=probes, bundle=bundle_facts(bundle, pubkey) if bundle else None)


__all__ = ["probe_backend", "installed_wheels", "bundle_facts", "gather_facts"]
