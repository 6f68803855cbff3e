"""TFLite (litert-torch) conversion of the tiny towers: static batch-1 signatures, int32 tokens, int8 and
fp16 within the spec's tolerance against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("ai_edge_quantizer")

from lugha.config import get_model_config  # noqa: E402
from lugha.export.graph_runners import io_quantization, tflite_interpreter, tflite_runner  # noqa: E402
from lugha.export.specs import SPECS, tolerance_for, torch_reference  # noqa: E402
from lugha.export.tflite_export import export_tflite, static_inputs  # noqa: E402
from lugha.parity import assert_parity  # noqa: E402

pytestmark = pytest.mark.slow  # litert-torch conversions take several seconds each


@pytest.fixture(scope="module")
def tiny():
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    return build_model(cfg, tok.vocab_size).eval(), tok


def test_text_tower_signatures_per_length_and_int8(tiny, tmp_path):
    model, tok = tiny
    spec = SPECS["text_encoder"]
    ids, mask = tok(["habari ya asubuhi", "ọmọ náà ń sùn lórí ibùsùn", "kare"])
    inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    ref = torch_reference(spec, model, inputs)
    sizes = {}
    for precision in ("fp32", "int8"):
        done = export_tflite(spec, model, precision, inputs, tmp_path / f"t.{precision}.tflite", seq_lengths=(8, 16))
        assert done.signatures == {"seq_8": [1, 8], "seq_16": [1, 16]}
        interp = tflite_interpreter(done.path)
        details = interp.get_signature_runner("seq_8").get_input_details()
        assert {d["dtype"] for d in details.values()} == {np.int32}
        out = tflite_runner(done.path, spec, {"input_ids": tok.pad_id})(inputs)
        assert_parity(ref, out, tolerance_for(*spec.tolerances[precision], ref), f"text/{precision}")
        sizes[precision] = done.path.stat().st_size
    assert sizes["int8"] < 0.5 * sizes["fp32"]
    assert [t.dtype for t in static_inputs(spec, model, "NCHW", 16)] == ["int32", "int32"]


def test_image_tower_pt2e_int8_and_fp16(tiny, tmp_path):
    model, _ = tiny
    spec = SPECS["image_encoder"]
    g = torch.Generator().manual_seed(1)
    pixels = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4, generator=g) * 2, size=32, mode="bilinear").numpy()
    inputs = {"pixel_values": pixels}
    ref = torch_reference(spec, model, inputs)
    for precision in ("fp32", "fp16", "int8"):
        done = export_tflite(spec, model, precision, inputs, tmp_path / f"i.{precision}.tflite",
                             calib_batches=[pixels])
        assert done.signatures == {"serving_default": [1, 3, 32, 32]}
        out = tflite_runner(done.path, spec)(inputs)
        assert_parity(ref, out, tolerance_for(*spec.tolerances[precision], ref), f"image/{precision}")
        if precision == "int8":  # full-integer graph: the boundary's scale/zero point are recorded
            assert done.quantization["calibration_images"] == 8
            assert set(done.quantization.get("io", {})) == {"pixel_values", "image_embeds"} == set(
                io_quantization(done.path, spec))
            n_relu6 = sum(1 for m in model.image_tower.modules() if type(m).__name__ == "ReLU6")
            assert f"{n_relu6} conv+ReLU/ReLU6 pairs observed after the clamp" in done.quantization["activations"]
            assert "GPTQ rounding on the calibration images" in done.quantization["weights"]
            assert done.quantization["float_stem"] == "none (auto)"  # the tiny twin's first residual is late
            _same_as_the_runtime_session(done.path, spec, inputs, out)


def test_image_int8_float_stem_takes_float_input(tiny, tmp_path):
    from lugha.export.tflite_int8 import convert_image_int8_pt2e

    model, _ = tiny
    spec = SPECS["image_encoder"]
    g = torch.Generator().manual_seed(2)
    pixels = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4, generator=g) * 2, size=32, mode="bilinear").numpy()
    done = convert_image_int8_pt2e(spec, model, {"pixel_values": pixels[:1]}, tmp_path / "stem.tflite", [pixels],
                                   float_stem=2)
    assert done.quantization["float_stem"] == "2 leading convs kept float (2)"
    n_relu6 = sum(1 for m in model.image_tower.modules() if type(m).__name__ == "ReLU6")
    assert f"{n_relu6 - 2} conv+ReLU/ReLU6 pairs observed" in done.quantization["activations"]
    details = tflite_interpreter(done.path).get_signature_runner().get_input_details()
    assert [np.dtype(d["dtype"]) for d in details.values()] == [np.float32]  # the stem's input is float
    assert set(io_quantization(done.path, spec)) == {"image_embeds"}
    ref = torch_reference(spec, model, {"pixel_values": pixels})
    assert_parity(ref, tflite_runner(done.path, spec)({"pixel_values": pixels}),
                  tolerance_for(*spec.tolerances["int8"], ref), "image/int8 float stem")


def _same_as_the_runtime_session(path, spec, inputs, out):
    """The exporter's gate runner and the LiteRT runtime share lugha.runtimes.tflite_io: identical outputs."""
    from lugha.manifest import GraphSpec, TensorSpec
    from lugha.runtimes.litert_backend import TfliteSession

    g = GraphSpec(spec.name, "tflite", "int8", path.name, (TensorSpec("pixel_values", "float32", (1, 3, 32, 32)),),
                  (TensorSpec("image_embeds", "float32", (1, out["image_embeds"].shape[1])),))
    np.testing.assert_array_equal(TfliteSession(path, g).run(inputs)["image_embeds"], out["image_embeds"])


def test_relu6_after_a_conv_gets_its_own_observer_not_the_convs(tiny):
    """litert-torch's stock annotators let ReLU6 share the conv's observer (the int8 grid then spans the
    pre-activation range); the exporter's quantizer observes after the clamp, which TFLite fuses."""
    from lugha.export.tflite_int8 import _clamp_aware_quantizer
    from torchao.quantization.pt2e import quantize_pt2e

    model, _ = tiny
    x = torch.randn(1, 3, 32, 32)
    for aware in (True, False):
        graph = torch.export.export(SPECS["image_encoder"].wrap(model), (), {"pixel_values": x}).module()
        prepared = quantize_pt2e.prepare_pt2e(graph, _clamp_aware_quantizer(aware))
        is_observer = lambda n: n.op == "call_module" and "activation_post_process" in str(n.target)  # noqa: E731

        def producer(n):
            p = n.args[0]
            while is_observer(p):
                p = p.args[0]
            return p

        clamps = [n for n in prepared.graph.nodes if n.op == "call_function" and "hardtanh" in str(n.target)
                  and "conv" in str(producer(n).target)]
        assert clamps and all(all(is_observer(u) for u in c.users) for c in clamps)
        # clamp-aware: the conv feeds its clamp directly (no observer of the pre-activation); stock: observed
        assert all(not is_observer(c.args[0]) for c in clamps) is aware
        assert all(is_observer(c.args[0]) for c in clamps) is not aware


def test_activation_ranges_are_min_max_by_default_histogram_on_request(tiny):
    """Activation observers: min/max (the default; the histogram observer clips what calibration did not
    show), litert-torch's histogram observer when asked; anything else is refused by name."""
    from lugha.export.tflite_export import TfliteExportError
    from lugha.export.tflite_int8 import _clamp_aware_quantizer
    from torchao.quantization.pt2e import quantize_pt2e
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    model, _ = tiny
    x = torch.randn(1, 3, 32, 32)
    for observer, cls in (("minmax", MinMaxObserver), ("histogram", HistogramObserver)):
        graph = torch.export.export(SPECS["image_encoder"].wrap(model), (), {"pixel_values": x}).module()
        args = () if observer == "minmax" else (True, frozenset(), observer)
        prepared = quantize_pt2e.prepare_pt2e(graph, _clamp_aware_quantizer(*args))
        kinds = {type(m) for name, m in prepared.named_modules() if "activation_post_process" in name}
        assert cls in kinds and not (kinds & {HistogramObserver, MinMaxObserver}) - {cls}
    with pytest.raises(TfliteExportError, match="percentile"):
        _clamp_aware_quantizer(True, frozenset(), "percentile")
