"""Every registered export spec has a tiny export test (optimum's rule): ONNX on the test twin, fp32 parity."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lugha.config import get_model_config  # noqa: E402
from lugha.export.graph_runners import onnx_runner  # noqa: E402
from lugha.export.onnx_export import export_onnx  # noqa: E402
from lugha.export.specs import SPECS, specs_for, tolerance_for, torch_reference  # noqa: E402
from lugha.parity import assert_parity, check_tensors  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    from lugha.training.adapters import apply_adapter
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    model = build_model(cfg, tok.vocab_size).eval()
    # a prototype head is what makes a run have a fusion_head graph
    apply_adapter(model, dataclasses.replace(cfg.adapter, kind="prototype"), num_classes=3, verbose=False)
    return model.eval(), tok


def _image(model, tok):
    rng = np.random.default_rng(0)
    return {"pixel_values": rng.standard_normal((2, 3, model.cfg.preprocess.size, model.cfg.preprocess.size)).astype(np.float32)}


def _text(model, tok):
    ids, mask = tok(["habari ya asubuhi", "ọmọ náà ń sùn lórí ibùsùn"])
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _fusion(model, tok):
    rng = np.random.default_rng(1)
    d = model.cfg.embed_dim
    return {"image_embeds": rng.standard_normal((2, d)).astype(np.float32),
            "text_embeds": rng.standard_normal((2, d)).astype(np.float32)}


EXPORT_TESTS = {"image_encoder": _image, "text_encoder": _text, "fusion_head": _fusion}


def test_every_registered_spec_has_an_export_test():
    missing = sorted(set(SPECS) - set(EXPORT_TESTS))
    assert not missing, f"export specs without a tiny export test: {missing}"


def test_fusion_head_applies_only_to_runs_that_trained_one(tiny):
    from lugha.training.model import build_model

    model, tok = tiny
    assert [s.name for s in specs_for(model)] == ["image_encoder", "text_encoder", "fusion_head"]
    plain = build_model(model.cfg, tok.vocab_size)
    assert [s.name for s in specs_for(plain)] == ["image_encoder", "text_encoder"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPORT_TESTS))
def test_spec_exports_to_onnx_with_fp32_parity(name, tiny, tmp_path):
    model, tok = tiny
    spec = SPECS[name]
    inputs = EXPORT_TESTS[name](model, tok)
    check_tensors(inputs, spec.inputs(model), name)  # the sample follows the spec it exports
    done = export_onnx(spec, model, inputs, tmp_path / f"{name}.onnx")
    assert done.exporter in ("dynamo", "legacy") and done.path.is_file()
    # a different batch size than the export sample: the batch axis must really be dynamic
    more = {k: np.concatenate([v, v[:1]]) for k, v in inputs.items()}
    ref = torch_reference(spec, model, more)
    out = onnx_runner(done.path)(more)
    check_tensors(out, spec.outputs(model), name)
    assert_parity(ref, out, tolerance_for(*spec.tolerances["fp32"], ref), name)
