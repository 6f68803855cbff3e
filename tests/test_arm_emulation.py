"""The engines on an emulated Raspberry Pi (qemu-user aarch64, scripts/arm_env.sh) give x86's numbers.

Parity only, never speed: emulation is two orders of magnitude slower than the chip. A tiny ONNX graph
(fp32 and static int8 QDQ) and a tiny .tflite are built here on x86, run by x86 ONNX Runtime / LiteRT and
by the aarch64 wheels under qemu for a Pi 4 (Cortex-A72: NEON, no dot-product) and a Pi 5 (Cortex-A76:
dot-product), and compared with lugha.parity. Skips, saying how to build it, when the env is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lugha.manifest import Tolerance
from lugha.parity import assert_parity

REPO = Path(__file__).resolve().parents[1]
ARM_DIR = Path(os.environ.get("LUGHA_ARM_DIR", REPO / ".cache" / "arm64"))
CPUS = ("cortex-a72", "cortex-a76")
_BUILT = (ARM_DIR / "sysroot/usr/bin/python3.11").exists() and all((ARM_DIR / "roots" / c / "proc/cpuinfo").exists()
                                                                     for c in CPUS)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not _BUILT, reason=f"no emulated aarch64 env in {ARM_DIR}: run `bash scripts/arm_env.sh` (or set LUGHA_ARM_DIR)")]
# fp32 kernels differ between x86 and ARM only in summation order; int8 kernels may round one step apart.
FP32 = Tolerance(max_abs=1e-5, min_cosine=0.99999)


def arm_python(cpu: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(REPO / "scripts/arm_test.sh"), "--cpu", cpu, "--dir", str(ARM_DIR), "--",
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"emulated python failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("cpu", CPUS)
def test_lugha_and_engines_import_emulated(cpu):
    code = ("import platform, lugha.runtimes, numpy, onnxruntime, ai_edge_litert.interpreter, tokenizers, PIL\n"
            "print(platform.machine(), onnxruntime.__version__, numpy.__version__, lugha.runtimes.__file__)")
    machine, ort_version, np_version, where = arm_python(cpu, "-c", code).stdout.split()
    import onnxruntime

    assert machine == "aarch64" and ort_version == onnxruntime.__version__ and np_version == np.__version__
    assert where == "/opt/lugha/lib/lugha/runtimes/__init__.py"


@pytest.mark.parametrize("cpu, model, int8", [("cortex-a72", "Cortex-A72", "warn"), ("cortex-a76", "Cortex-A76", "ok")])
def test_doctor_sees_the_emulated_pi(cpu, model, int8):
    report = json.loads(arm_python(cpu, "-m", "lugha.cli", "doctor", "--json").stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and report["facts"]["machine"] == "aarch64" and report["facts"]["pointer_bits"] == 64
    assert report["facts"]["cpu"]["model"] == model and checks["int8"]["status"] == int8
    assert checks["onnxruntime"]["status"] == "ok" and checks["litert"]["status"] == "ok"


def _tiny_onnx(folder: Path, x: np.ndarray) -> list[Path]:
    """Conv -> Relu -> GlobalAveragePool -> Gemm in fp32, and its static int8 QDQ twin (per channel)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype("f4"), "w"),
             numpy_helper.from_array(rng.normal(size=8).astype("f4"), "b"),
             numpy_helper.from_array(rng.normal(size=(8, 5)).astype("f4"), "fc"),
             numpy_helper.from_array(rng.normal(size=5).astype("f4"), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32, int8 = folder / "tiny.fp32.onnx", folder / "tiny.int8.onnx"
    onnx.save(model, fp32)

    class Calib(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.normal(size=(1, 3, 16, 16)).astype("f4")} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), Calib(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return [fp32, int8]


def _tiny_tflite(folder: Path, x: np.ndarray) -> list[Path]:
    try:
        import litert_torch
        import torch
    except ImportError:  # the export extra is absent: ONNX parity alone
        return []
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    path = folder / "tiny.fp32.tflite"
    litert_torch.convert(module, (torch.from_numpy(x),)).export(str(path))
    return [path]


RUN_ALL = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    folder = Path(sys.argv[1]); x = np.load(folder / "x.npy"); out = {}
    for path in sorted(folder.glob("tiny.*.*")):
        if path.suffix == ".onnx":
            import onnxruntime as ort
            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out[path.name] = s.run(None, {"x": x})[0]
        elif path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter
            it = Interpreter(model_path=str(path)); it.allocate_tensors()
            it.set_tensor(it.get_input_details()[0]["index"], x); it.invoke()
            out[path.name] = it.get_tensor(it.get_output_details()[0]["index"])
    np.savez(folder / sys.argv[2], **out)
    print(" ".join(sorted(out)))
""")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype("f4")
    np.save(folder / "x.npy", x)
    _tiny_onnx(folder, x)
    _tiny_tflite(folder, x)
    (folder / "run_all.py").write_text(RUN_ALL)
    subprocess.run([sys.executable, str(folder / "run_all.py"), str(folder), "x86.npz"], check=True,
                   capture_output=True, timeout=300)
    return folder


@pytest.mark.parametrize("cpu", CPUS)
def test_tiny_graphs_give_x86_numbers_emulated(tiny_models, cpu):
    names = arm_python(cpu, str(tiny_models / "run_all.py"), str(tiny_models), f"{cpu}.npz").stdout.split()
    with np.load(tiny_models / "x86.npz") as ref, np.load(tiny_models / f"{cpu}.npz") as got:
        assert sorted(ref.files) == names and "tiny.int8.onnx" in names
        for name in names:
            # int8: the output is dequantized uint8, so one step of its scale is the honest tolerance
            tol = FP32 if "fp32" in name else Tolerance(max_abs=_output_step(tiny_models / name), min_cosine=0.999)
            assert_parity({"y": ref[name]}, {"y": got[name]}, tol, f"{name} on {cpu}")


def _output_step(path: Path) -> float:
    """The scale of the DequantizeLinear that yields ``y``: one quantisation step of the int8 graph's output."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    scales = {i.name: float(numpy_helper.to_array(i).max()) for i in m.graph.initializer}
    last = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    return 1.01 * scales[last.input[1]]


@pytest.fixture(scope="module")
def arm_bundle(demo_small, tmp_path_factory) -> str:
    """LUGHA_ARM_BUNDLE, or a test-tiny bundle exported here (ONNX + TFLite, fp32 + int8): the int8
    subset then runs in CI on a bundle made by the real export path, not only on hand-built graphs."""
    if os.environ.get("LUGHA_ARM_BUNDLE"):
        return os.environ["LUGHA_ARM_BUNDLE"]
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from lugha.export.pipeline import ExportOptions, export_run
    from lugha.export.source import untrained_source

    out = tmp_path_factory.mktemp("arm") / "bundle"
    # allow_drop: an untrained tiny model on a few held-out emoji; its pooled gate cells cannot pass at that n
    export_run(untrained_source("test-tiny", demo_small, ("en", "sw", "yo")), out,
               ExportOptions(formats=("onnx", "tflite"), precisions=("fp32", "int8"), allow_drop=True,
                             calib_samples=8, seq_lengths=(8, 16)), say=lambda m: None)
    return str(out)


@pytest.mark.parametrize("cpu", CPUS)
def test_device_tests_int8_parity_on_a_bundle_emulated(cpu, arm_bundle):
    """The CI subset on an exported bundle: every int8 graph on ONNX Runtime and LiteRT, against the
    bundle's golden outputs, on the emulated Pi (~40 s a CPU for the real model)."""
    proc = arm_python(cpu, "-m", "pytest", "-q", "-p", "no:cacheprovider", "device_tests/test_parity.py",
                      "--bundle", arm_bundle, "--backends", "onnxruntime,litert", "-k", "int8")
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail, proc.stdout[-2000:]
