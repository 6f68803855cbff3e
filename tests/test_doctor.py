"""`lugha doctor`: verdicts from the /proc texts of real boards, engine import probes (a crash and a hang
included), and the command on this machine and on a real bundle folder."""
from __future__ import annotations

import json
import platform
import sys
from dataclasses import replace

import pytest

from lugha.cli import main
from lugha.runtimes import doctor_probe
from lugha.runtimes.backends import BACKENDS, BackendInfo
from lugha.runtimes.doctor import (FAIL, INFO, OK, WARN, BackendProbe, BundleFacts, MachineFacts, check_cpu,
                                   check_glibc, check_memory, check_numpy, check_userland, diagnose, glibc_of_tag,
                                   parse_cpuinfo, parse_meminfo)

X86_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bitalg

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bitalg
"""


def _pi(n: int, block: str, tail: str) -> str:
    return "".join(f"processor\t: {i}\n{block}\n" for i in range(n)) + tail


PI4_AARCH64 = _pi(4, "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
                     "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n",
                  "Revision\t: c03111\nSerial\t\t: 10000000a1b2c3d4\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n")
PI5_AARCH64 = _pi(4, "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                     "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                     "CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n",
                  "Revision\t: d04170\nSerial\t\t: 5d1e2f3a4b5c6d7e\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
PI4_ARMV7L = _pi(4, "model name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\nFeatures\t: half thumb "
                    "fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
                    "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
                    "CPU revision\t: 3\n",
                 "Hardware\t: BCM2711\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n")
MEMINFO_PI4 = "MemTotal:        3884356 kB\nMemFree:          812340 kB\nMemAvailable:    2915672 kB\n" \
              "Buffers:           61232 kB\nCached:          1983644 kB\nSwapTotal:        102396 kB\n"
MB = 2**20


def _status(checks, name):
    return next(c for c in checks if c.name == name).status


def test_x86_with_avx512_vnni():
    cpu = parse_cpuinfo(X86_VNNI)
    assert (cpu.arch, cpu.cores, cpu.model) == ("x86_64", 2, "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
    checks = check_cpu(cpu)
    assert _status(checks, "cpu") == OK and _status(checks, "int8") == OK
    assert "avx512_vnni" in checks[1].summary
    old = replace(cpu, features=tuple(f for f in cpu.features if not f.startswith(("avx2", "avx512"))))
    assert [c.status for c in check_cpu(old)] == [WARN, WARN]


def test_pi4_cortex_a72_has_neon_but_no_dot_product():
    cpu = parse_cpuinfo(PI4_AARCH64)
    assert (cpu.arch, cpu.model, cpu.cores, cpu.board) == ("aarch64", "Cortex-A72", 4, "Raspberry Pi 4 Model B Rev 1.1")
    checks = check_cpu(cpu)
    assert _status(checks, "cpu") == OK and "NEON" in checks[0].summary
    assert _status(checks, "int8") == WARN and "dot-product" in checks[1].summary
    assert check_userland("aarch64", 64).status == OK


def test_pi5_cortex_a76_has_dot_product():
    cpu = parse_cpuinfo(PI5_AARCH64, machine="aarch64")
    assert (cpu.model, cpu.board) == ("Cortex-A76", "Raspberry Pi 5 Model B Rev 1.0")
    assert "asimddp" in cpu.features and "asimdhp" in cpu.features
    assert [c.status for c in check_cpu(cpu)] == [OK, OK]


def test_32bit_pi_os_is_refused_with_the_64bit_advice():
    cpu = parse_cpuinfo(PI4_ARMV7L)
    assert (cpu.arch, cpu.model) == ("armv7l", "Cortex-A72")
    assert check_cpu(cpu)[0].status == WARN and "32-bit" in check_cpu(cpu)[0].summary
    pure32 = check_userland("armv7l", 32)
    assert pure32.status == FAIL and "64-bit" in pure32.advice
    # Pi OS 32-bit on a Pi 4 boots a 64-bit kernel: uname says aarch64, pointers are 4 bytes.
    mixed = check_userland("aarch64", 32)
    assert mixed.status == FAIL and "32-bit userland" in mixed.summary


def test_meminfo_available_and_fallback():
    assert parse_meminfo(MEMINFO_PI4) == 2915672 * 1024
    old_kernel = "\n".join(line for line in MEMINFO_PI4.splitlines() if not line.startswith("MemAvailable"))
    assert parse_meminfo(old_kernel) == (812340 + 61232 + 1983644) * 1024
    assert parse_meminfo("") is None
    assert check_memory(parse_meminfo(MEMINFO_PI4), (1000 * MB, "x")).status == OK
    assert check_memory(parse_meminfo(MEMINFO_PI4), (3500 * MB, "x")).status == WARN  # within 75 %
    assert check_memory(parse_meminfo(MEMINFO_PI4), (8000 * MB, "x")).status == FAIL


def test_glibc_against_wheel_tags():
    assert glibc_of_tag("manylinux_2_28_aarch64") == (2, 28)
    assert glibc_of_tag("manylinux2014_aarch64") == (2, 17)
    assert glibc_of_tag("linux_armv7l") is None  # piwheels / local builds: no manylinux promise
    bookworm = check_glibc(("glibc", "2.36"), {})
    assert bookworm.status == OK
    bullseye = check_glibc(("glibc", "2.31"), {})  # Pi OS Bullseye: tflite-runtime 2.14 needs 2.34
    assert bullseye.status == WARN and "tflite-runtime" in bullseye.summary and "onnxruntime" not in bullseye.summary
    installed = {"onnxruntime": {"version": "1.32.0", "tags": ["manylinux_2_28_aarch64"]}}
    assert "onnxruntime" in check_glibc(("glibc", "2.27"), installed).summary
    assert check_glibc(("glibc", "2.17"), {}).status == FAIL
    assert check_glibc(("", ""), {}).status == WARN  # musl (Alpine)


def test_numpy_2_with_tflite_runtime_is_flagged():
    tflite = BackendProbe("tflite", True, error="ImportError: numpy.core.multiarray failed to import")
    assert check_numpy("2.1.0", tflite).status == WARN and "numpy<2" in check_numpy("2.1.0", tflite).advice
    assert check_numpy("1.26.4", tflite).status == OK
    assert check_numpy("2.1.0", BackendProbe("tflite", False)).status == OK
    assert check_numpy("1.21.0", None).status == FAIL


def _facts(**changes) -> MachineFacts:
    base = MachineFacts(machine="aarch64", pointer_bits=64, cpu=parse_cpuinfo(PI4_AARCH64),
                        mem_available=parse_meminfo(MEMINFO_PI4), libc=("glibc", "2.36"), python="3.11.2",
                        numpy="2.4.6", disk_free=20 * 2**30, disk_path="/home/pi",
                        backends={"onnxruntime": BackendProbe("onnxruntime", True, "1.32.0", ("CPUExecutionProvider",)),
                                  "litert": BackendProbe("litert", False), "tflite": BackendProbe("tflite", False)})
    return replace(base, **changes)


def _graphs(*keys: str, size: int = 40 * MB) -> tuple[dict, ...]:
    out = []
    for key in keys:
        name, fmt, precision = key.split("/")
        out.append({"key": key, "name": name, "format": fmt, "precision": precision,
                    "bytes": size // (4 if precision == "int8" else 1)})
    return tuple(out)


def test_diagnose_a_pi4_with_onnxruntime_and_a_two_format_bundle():
    bundle = BundleFacts("bundles/demo", graphs=_graphs("image_encoder/onnx/fp32", "text_encoder/onnx/fp32",
                                                        "image_encoder/onnx/int8", "image_encoder/tflite/int8"))
    checks, ok = diagnose(_facts(bundle=bundle))
    assert ok
    assert _status(checks, "runs on onnxruntime") == OK
    assert "int8: image_encoder" in next(c for c in checks if c.name == "runs on onnxruntime").summary
    litert = next(c for c in checks if c.name == "runs on litert")
    assert litert.status == WARN and "lugha[litert]" in litert.advice  # tflite graphs, no engine for them
    memory = next(c for c in checks if c.name == "memory")
    assert "onnx/fp32" in memory.summary and "2.5 x 80 MB" in memory.summary  # the largest precision, named
    assert _status(checks, "tflite") == WARN  # not installed, and litert does not cover .tflite either


def test_diagnose_fails_when_the_only_engine_crashes_at_import():
    crashed = BackendProbe("onnxruntime", True, error="SIGSEGV", crashed=True)
    facts = _facts(backends={"onnxruntime": crashed, "litert": BackendProbe("litert", False)},
                   bundle=BundleFacts("b", graphs=_graphs("image_encoder/onnx/int8")))
    checks, ok = diagnose(facts)
    assert not ok
    ort = next(c for c in checks if c.name == "onnxruntime")
    assert ort.status == FAIL and "SIGSEGV" in ort.summary and "/proc/cpuinfo" in ort.advice
    assert _status(checks, "bundle runs") == FAIL
    checks, ok = diagnose(replace(facts, bundle=None))
    assert not ok and _status(checks, "backends") == FAIL


def test_diagnose_a_bundle_that_does_not_verify():
    checks, ok = diagnose(_facts(bundle=BundleFacts("b", error="graphs/x.onnx: SHA-256 1234... differs")))
    assert not ok and _status(checks, "bundle") == FAIL


def test_a_missing_engine_is_info_when_another_runs_its_format():
    backends = {"onnxruntime": BackendProbe("onnxruntime", True, "1.32.0"), "litert": BackendProbe("litert", True, "2.3"),
                "tflite": BackendProbe("tflite", False)}
    checks, ok = diagnose(_facts(backends=backends, bundle=BundleFacts("b", graphs=_graphs("text_encoder/tflite/fp32"))))
    assert ok and _status(checks, "tflite") == INFO and _status(checks, "runs on litert") == OK


# --- probes, for real -------------------------------------------------------------------------------

def test_probe_imports_onnxruntime_in_a_child():
    pytest.importorskip("onnxruntime")
    probe = doctor_probe.probe_backend("onnxruntime", timeout=120)
    assert probe.ok and probe.how == "subprocess" and "CPUExecutionProvider" in probe.providers
    assert probe.version and probe.numpy


@pytest.mark.parametrize("body, expect, timeout", [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "SIGSEGV", 60),
    ("import time\ntime.sleep(30)\n", "did not finish", 2),
    ("raise ImportError('libfoo.so.1: cannot open shared object file')\n", "libfoo.so.1", 60),
], ids=["crash", "hang", "import-error"])
def test_probe_survives_an_engine_that_crashes_hangs_or_fails(tmp_path, monkeypatch, body, expect, timeout):
    (tmp_path / "fake_engine.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = dict(BACKENDS, onnxruntime=BackendInfo("onnxruntime", "onnx", "fake_engine", "pip install x", ""))
    monkeypatch.setattr(doctor_probe, "BACKENDS", fake)
    probe = doctor_probe.probe_backend("onnxruntime", timeout=timeout)
    assert not probe.ok and expect in probe.error
    assert probe.crashed == (expect == "SIGSEGV")


def test_doctor_json_on_this_machine(capsys):
    rc = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    facts = report["facts"]
    assert facts["machine"] == platform.machine() and facts["python"] == platform.python_version()
    assert facts["pointer_bits"] == (64 if sys.maxsize > 2**32 else 32)
    names = [c["name"] for c in report["checks"]]
    assert {"cpu", "os", "glibc", "python", "numpy", "memory", "disk", "onnxruntime"} <= set(names)
    assert rc == (0 if report["ok"] else 1)
    assert report["ok"] == any(b["installed"] and not b["error"] for b in facts["backends"].values())


def test_doctor_on_a_bundle_folder_and_a_tampered_one(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from test_manifest import build_bundle

    build_bundle(tmp_path / "b")
    assert main(["doctor", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "runs on onnxruntime" in out and "fp32: image_encoder" in out and "int8: text_encoder" in out
    assert out.rstrip().endswith("ready: this machine can run it")
    with open(tmp_path / "b/graphs/image_encoder.fp32.onnx", "r+b") as f:
        f.write(b"X")
    assert main(["doctor", str(tmp_path / "b"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad = next(c for c in report["checks"] if c["name"] == "bundle")
    assert bad["status"] == FAIL and "graphs/image_encoder.fp32.onnx" in bad["summary"]


def test_checklist_falls_back_to_ascii_marks():
    from lugha.cli.doctor import format_checklist

    checks, ok = diagnose(_facts(bundle=BundleFacts("b", error="manifest.json: missing")))
    text = format_checklist(checks, ok, unicode=False)
    assert not ok and text.isascii() and "XX bundle" in text and text.endswith("NOT ready: fix the XX lines above")
    assert "-> re-copy the bundle" in text
