"""``lugha doctor``: will this machine run a bundle? Checked before a field trip, not discovered there.

Two halves. :mod:`lugha.runtimes.doctor_probe` reads the machine into :class:`MachineFacts` (cpuinfo,
meminfo, glibc, wheel tags, engine imports in child processes, a bundle's manifest); :func:`diagnose`
here turns facts into verdicts and is pure, so tests feed it the /proc/cpuinfo of a Pi 4, a Pi 5, a
32-bit Pi OS or an AVX-512 laptop without owning one. Torch-free, stdlib only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lugha._schema import to_dict
from lugha.runtimes.backends import AUTO_ORDER, BACKENDS

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

# ARM's CPU part numbers (implementer 0x41) on the boards people carry: Pi Zero/1, 2, 3, 4, 5 and phones.
ARM_PARTS = {0xB76: "ARM1176", 0xC07: "Cortex-A7", 0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55",
             0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75",
             0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD41: "Cortex-A78",
             0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD4B: "Cortex-A78C"}
# glibc the PyPI wheels need when they are NOT installed here (installed ones are read from their WHEEL
# tags). Seen for onnxruntime 1.32, ai-edge-litert 2.3 and tflite-runtime 2.14 (aarch64 and x86_64); none
# of the three publishes 32-bit ARM wheels.
PYPI_MIN_GLIBC = {"onnxruntime": (2, 28), "ai-edge-litert": (2, 27), "tflite-runtime": (2, 34)}
# Resident memory per byte of file, measured with ONNX Runtime 1.32 / LiteRT 2.3 / tokenizers 0.22 on x86:
# loaded graphs cost 0.3-2.5x their files (weights, pre-packed copies, arena); a tokenizer.json costs ~33x
# (a 250k-piece Unigram vocabulary of 8.4 MB took 282 MB); BASE is Python, numpy and the engines' code.
MEMORY_FACTOR = 2.5
TOKENIZER_FACTOR = 35
BASE_MEMORY = 100 * 2**20
DISK_WARN, DISK_FAIL = 2**30, 100 * 2**20


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | info
    summary: str
    advice: str = ""


@dataclass(frozen=True)
class CpuInfo:
    arch: str  # x86_64, aarch64, armv7l, armv6l, or what platform.machine() says
    model: str
    cores: int
    features: tuple[str, ...]
    board: str = ""  # "Raspberry Pi 4 Model B Rev 1.4" (the Model: line), "" elsewhere


@dataclass(frozen=True)
class BackendProbe:
    """How importing one engine went. ``error``: "" when it imported; ``crashed``: killed by a signal."""

    name: str
    installed: bool
    version: str = ""
    providers: tuple[str, ...] = ()
    numpy: str = ""
    error: str = ""
    crashed: bool = False
    seconds: float = 0.0
    how: str = "subprocess"  # or "in-process": no child could be started (qemu-user without binfmt)

    @property
    def ok(self) -> bool:
        return self.installed and not self.error


@dataclass(frozen=True)
class BundleFacts:
    path: str
    error: str = ""  # why the manifest did not load or verify; "" when it did
    graphs: tuple[dict, ...] = ()  # {"key", "name", "format", "precision", "bytes"}
    total_bytes: int = 0
    tokenizer_bytes: int = 0
    signed_by: str = ""  # the trusted key that signed it; "" when no key is configured


@dataclass(frozen=True)
class MachineFacts:
    machine: str
    pointer_bits: int
    cpu: CpuInfo
    mem_available: int | None  # bytes
    libc: tuple[str, str]  # ("glibc", "2.36"), ("", "") on musl or macOS
    python: str
    numpy: str
    disk_free: int | None
    disk_path: str
    wheels: dict[str, dict] = field(default_factory=dict)  # dist -> {"version", "tags"}
    backends: dict[str, BackendProbe] = field(default_factory=dict)
    bundle: BundleFacts | None = None

    def to_dict(self) -> dict:
        return to_dict(self)


# --- parsing ---------------------------------------------------------------------------------------

def _blocks(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            out.append({})
        elif ":" in line:
            key, _, value = line.partition(":")
            out[-1].setdefault(key.strip(), value.strip())
    return [b for b in out if b]


def parse_cpuinfo(text: str, machine: str = "") -> CpuInfo:
    """/proc/cpuinfo of x86 (``flags``) or ARM (``Features``, ``CPU part``); ``machine`` wins over the guess."""
    blocks = _blocks(text)
    cpus = [b for b in blocks if "processor" in b and b["processor"].isdigit()]
    first = cpus[0] if cpus else (blocks[0] if blocks else {})
    extra = {k: v for b in blocks for k, v in b.items()}  # the Pi's Hardware/Model come after the CPUs
    features = tuple((first.get("flags") or first.get("Features") or "").split())
    part = first.get("CPU part", "")
    arch_field = first.get("CPU architecture", "")
    if "flags" in first:
        guess = "x86_64"
    elif arch_field.startswith("8") or "asimd" in features:
        guess = "aarch64"
    elif "v6" in first.get("model name", "") or part == "0xb76":
        guess = "armv6l"
    else:
        guess = "armv7l" if arch_field else ""
    model = first.get("model name", "")
    if part:
        model = ARM_PARTS.get(int(part, 16), f"ARM part {part}")
    return CpuInfo(arch=machine or guess, model=model or "unknown CPU", cores=max(len(cpus), 1),
                   features=features, board=extra.get("Model", ""))


def parse_meminfo(text: str) -> int | None:
    """Bytes available to a new process: MemAvailable (kernel >= 3.14), else free + page cache."""
    kb = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)", line)
        if m:
            kb[m.group(1)] = int(m.group(2))
    if "MemAvailable" in kb:
        return kb["MemAvailable"] * 1024
    if "MemFree" in kb:
        return (kb["MemFree"] + kb.get("Buffers", 0) + kb.get("Cached", 0)) * 1024
    return None


def glibc_of_tag(tag: str) -> tuple[int, int] | None:
    """The glibc a wheel platform tag needs: manylinux_2_28_aarch64 -> (2, 28); None for any other tag."""
    m = re.search(r"manylinux_(\d+)_(\d+)_", tag)
    if m:
        return int(m.group(1)), int(m.group(2))
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    return next((v for k, v in legacy.items() if f"{k}_" in tag), None)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


# --- verdicts (pure) -------------------------------------------------------------------------------

def check_cpu(cpu: CpuInfo) -> list[Check]:
    f = set(cpu.features)
    where = f"{cpu.model} x{cpu.cores}" + (f" ({cpu.board})" if cpu.board else "") + f", {cpu.arch}"
    if cpu.arch in ("aarch64", "arm64"):
        out = [Check("cpu", OK, f"{where}: NEON (asimd)") if "asimd" in f or not f else
               Check("cpu", FAIL, f"{where}: no NEON (asimd) reported", "ARM engines need NEON; check /proc/cpuinfo")]
        if "asimddp" in f:
            extras = " + i8mm" if "i8mm" in f else ""
            out.append(Check("int8", OK, f"dot-product instructions (asimddp{extras}): int8 graphs take the fast path"))
        else:
            out.append(Check("int8", WARN, "no dot-product instructions (Pi 4 class): int8 runs, with a smaller "
                             "speed-up than on a Pi 5", "measure with `lugha bench BUNDLE` and pick the precision"))
        return out
    if cpu.arch.startswith("armv7") or cpu.arch.startswith("armv8l"):
        simd = "NEON" if "neon" in f or "asimd" in f else "no NEON"
        return [Check("cpu", WARN, f"{where}: 32-bit ARM, {simd}",
                      "onnxruntime and ai-edge-litert publish no 32-bit ARM wheels: install a 64-bit OS")]
    if cpu.arch.startswith("armv6"):
        return [Check("cpu", FAIL, f"{where}: ARMv6 (Pi Zero / Pi 1)", "no engine supports ARMv6: use a Pi Zero 2, 3, 4 or 5")]
    if cpu.arch in ("x86_64", "AMD64", "amd64"):
        out = [Check("cpu", OK, f"{where}: AVX2") if "avx2" in f else
               Check("cpu", WARN, f"{where}: no AVX2", "engines fall back to SSE kernels: expect slow inference")]
        vnni = [x for x in ("avx512_vnni", "avx_vnni", "amx_int8") if x in f]
        out.append(Check("int8", OK, f"{', '.join(vnni)}: int8 graphs take the fast path") if vnni else
                   Check("int8", WARN, "no VNNI: int8 runs, with a smaller speed-up than fp32 suggests",
                         "measure with `lugha bench BUNDLE` and pick the precision"))
        return out
    return [Check("cpu", WARN, f"{where}: an architecture lugha was not tested on", "try `lugha bench`")]


def check_userland(machine: str, pointer_bits: int) -> Check:
    arm_kernel = machine in ("aarch64", "arm64")
    if pointer_bits == 64:
        return Check("os", OK, f"64-bit userland ({machine})")
    advice = "onnxruntime and ai-edge-litert publish no 32-bit wheels: install Raspberry Pi OS (64-bit)"
    what = "64-bit kernel with a 32-bit userland" if arm_kernel else f"32-bit OS ({machine})"
    return Check("os", FAIL, what, advice)


def check_glibc(libc: tuple[str, str], wheels: dict[str, dict]) -> Check:
    name, version = libc
    if name != "glibc":
        return Check("glibc", WARN, f"no glibc found ({name or 'musl or non-Linux'})",
                     "manylinux wheels need glibc: on Alpine use a Debian-based image")
    have = _version(version)[:2]
    needs = {}
    for dist, default in PYPI_MIN_GLIBC.items():
        tags = wheels.get(dist, {}).get("tags")
        found = [g for g in map(glibc_of_tag, tags or ()) if g]
        if tags is not None:  # installed: what its own wheel says (a source build needs nothing)
            if found:
                needs[dist] = min(found)
        else:
            needs[dist] = default
    too_new = {d: v for d, v in needs.items() if v > have}
    listing = ", ".join(f"{d} {v[0]}.{v[1]}" for d, v in sorted(needs.items()))
    if too_new:
        names = ", ".join(f"{d} (needs {v[0]}.{v[1]})" for d, v in sorted(too_new.items()))
        return Check("glibc", WARN if len(too_new) < len(needs) else FAIL, f"glibc {version} is too old for {names}",
                     "upgrade the OS (Pi OS Bookworm has glibc 2.36) or use a backend whose wheel fits")
    return Check("glibc", OK, f"glibc {version} (wheels need: {listing})")


def check_python(version: str) -> Check:
    v = _version(version)
    if v[:2] < (3, 10):
        return Check("python", FAIL, f"Python {version}", "lugha needs Python >= 3.10 (Pi OS Bookworm ships 3.11)")
    if v[:2] > (3, 11):
        return Check("python", OK, f"Python {version}", "tflite-runtime has no wheels past 3.11: use ai-edge-litert")
    return Check("python", OK, f"Python {version}")


def check_numpy(numpy_version: str, tflite: BackendProbe | None) -> Check:
    if not numpy_version:
        return Check("numpy", FAIL, "numpy does not import", "pip install 'numpy>=1.22'")
    if _version(numpy_version)[:2] < (1, 22):
        return Check("numpy", FAIL, f"numpy {numpy_version}", "lugha needs numpy >= 1.22")
    if tflite is not None and tflite.installed and _version(numpy_version)[0] >= 2:
        return Check("numpy", WARN, f"numpy {numpy_version}: tflite-runtime is built for numpy<2",
                     "pip install 'numpy<2' for tflite-runtime, or use ai-edge-litert (numpy 2 is fine)")
    return Check("numpy", OK, f"numpy {numpy_version}")


def check_memory(available: int | None, need: tuple[int, str] | None) -> Check:
    if available is None:
        return Check("memory", WARN, "free memory unknown (no /proc/meminfo)")
    if need is None:
        status = OK if available >= 512 * 2**20 else WARN
        return Check("memory", status, f"{_mb(available)} available", "" if status == OK else "close other programs")
    bytes_needed, why = need
    if available >= bytes_needed:
        return Check("memory", OK, f"{_mb(available)} available, bundle needs ~{_mb(bytes_needed)} ({why})")
    return Check("memory", WARN if available >= 0.75 * bytes_needed else FAIL,
                 f"{_mb(available)} available, bundle needs ~{_mb(bytes_needed)} ({why})",
                 "close other programs, add swap, or use the int8 graphs")


def check_disk(free: int | None, path: str) -> Check:
    if free is None:
        return Check("disk", WARN, f"free space unknown at {path}")
    status = OK if free >= DISK_WARN else WARN if free >= DISK_FAIL else FAIL
    return Check("disk", status, f"{_mb(free)} free at {path}",
                 "" if status == OK else "free space for logs, photos and indexes before the trip")


def check_backend(probe: BackendProbe, covered: bool) -> Check:
    """``covered``: another importable backend runs the same format (a missing one then does not matter)."""
    info = BACKENDS[probe.name]
    if probe.ok:
        providers = f"; providers: {', '.join(probe.providers)}" if probe.providers else ""
        where = "" if probe.how == "subprocess" else f", {probe.how}"
        return Check(probe.name, OK, f"{info.module.split('.')[0]} {probe.version} imports "
                                     f"({probe.seconds:.1f}s{where}{providers})")
    if not probe.installed:
        return Check(probe.name, INFO if covered else WARN, "not installed", info.install)
    if probe.crashed:
        advice = ("ONNX Runtime crashes at import when /proc/cpuinfo has no ARM 'CPU part' (emulators, some "
                  "containers): run on the board itself" if probe.name == "onnxruntime" else f"reinstall: {info.install}")
        return Check(probe.name, FAIL, f"crashed at import ({probe.error})", advice)
    return Check(probe.name, FAIL, f"installed but does not import: {probe.error}", f"reinstall: {info.install}")


def memory_need(bundle: BundleFacts, formats: list[str]) -> tuple[int, str] | None:
    """The most one open_bundle() would load: per format, the precision whose graphs are largest."""
    worst = None
    for fmt in formats:
        per_precision: dict[str, int] = {}
        for g in bundle.graphs:
            if g["format"] == fmt:
                per_precision[g["precision"]] = per_precision.get(g["precision"], 0) + g["bytes"]
        for precision, size in per_precision.items():
            if worst is None or size > worst[0]:
                worst = (size, f"{fmt}/{precision}")
    if worst is None:
        return None
    size, which = worst
    need = int(MEMORY_FACTOR * size + TOKENIZER_FACTOR * bundle.tokenizer_bytes + BASE_MEMORY)
    tokenizer = f" + {TOKENIZER_FACTOR} x {_mb(bundle.tokenizer_bytes)} tokenizer.json" if bundle.tokenizer_bytes else ""
    return need, f"{MEMORY_FACTOR} x {_mb(size)} of {which} graphs{tokenizer} + {_mb(BASE_MEMORY)}"


def check_bundle(bundle: BundleFacts, backends: dict[str, BackendProbe]) -> tuple[list[Check], bool]:
    """Per backend, which graphs it can run; and whether any backend runs any of them."""
    if bundle.error:
        return [Check("bundle", FAIL, bundle.error, "re-copy the bundle; check it with `lugha bundle verify`")], False
    out = [Check("bundle", OK, f"{bundle.path}: {len(bundle.graphs)} graphs, {_mb(bundle.total_bytes)}, "
                               f"every SHA-256 matches"
                               + (f", signed by {bundle.signed_by}" if bundle.signed_by else ""))]
    runnable = False
    for name in AUTO_ORDER:
        fmt = BACKENDS[name].format
        graphs = [g for g in bundle.graphs if g["format"] == fmt]
        probe = backends.get(name)
        if not graphs:
            continue
        by_precision: dict[str, list[str]] = {}
        for g in graphs:
            by_precision.setdefault(g["precision"], []).append(g["name"])
        listing = "; ".join(f"{p}: {', '.join(sorted(n))}" for p, n in sorted(by_precision.items()))
        if probe is not None and probe.ok:
            runnable = True
            out.append(Check(f"runs on {name}", OK, listing))
        else:
            status = INFO if any(p.ok and BACKENDS[n].format == fmt for n, p in backends.items()) else WARN
            out.append(Check(f"runs on {name}", status, f"{fmt} graphs ({listing}) but {name} is not usable here",
                             BACKENDS[name].install))
    if not runnable:
        have = ", ".join(sorted({g["format"] for g in bundle.graphs})) or "no graphs"
        out.append(Check("bundle runs", FAIL, f"no usable backend runs this bundle's formats ({have})",
                         "install one: pip install onnxruntime, or pip install lugha[litert]"))
    return out, runnable


def diagnose(facts: MachineFacts) -> tuple[list[Check], bool]:
    """Every verdict, and ``ok``: the bundle runs on at least one backend (no bundle: a backend imports)."""
    checks = check_cpu(facts.cpu)
    checks += [check_userland(facts.machine, facts.pointer_bits), check_glibc(facts.libc, facts.wheels),
               check_python(facts.python), check_numpy(facts.numpy, facts.backends.get("tflite"))]
    usable = [n for n, p in facts.backends.items() if p.ok]
    for name in AUTO_ORDER:
        if name in facts.backends:
            fmt = BACKENDS[name].format
            covered = any(BACKENDS[u].format == fmt for u in usable if u != name)
            checks.append(check_backend(facts.backends[name], covered))
    need = None
    if facts.bundle is not None and not facts.bundle.error:
        formats = sorted({BACKENDS[n].format for n in usable}) or sorted({g["format"] for g in facts.bundle.graphs})
        need = memory_need(facts.bundle, formats)
    checks += [check_memory(facts.mem_available, need), check_disk(facts.disk_free, facts.disk_path)]
    if facts.bundle is None:
        ok = bool(usable)
        if not ok:
            checks.append(Check("backends", FAIL, "no inference engine imports",
                                "pip install onnxruntime (and lugha[litert] for .tflite graphs)"))
        return checks, ok
    bundle_checks, ok = check_bundle(facts.bundle, facts.backends)
    return checks + bundle_checks, ok


__all__ = ["OK", "WARN", "FAIL", "INFO", "Check", "CpuInfo", "BackendProbe", "BundleFacts", "MachineFacts",
           "parse_cpuinfo", "parse_meminfo", "glibc_of_tag", "check_cpu", "check_userland", "check_glibc",
           "check_python", "check_numpy", "check_memory", "check_disk", "check_backend", "memory_need",
           "check_bundle", "diagnose", "ARM_PARTS"]
