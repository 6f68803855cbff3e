"""Every registered export spec, and every variant ``for_model`` gives (the cross-attention bundle's encoders
with patch/token outputs, its head), has a tiny export test (optimum's rule): ONNX on the test twin, fp32
parity on another batch size than the export sample."""
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
from lugha.export.specs import SPECS, fusion_head_of, grid_pool_matrix, specs_for, tolerance_for, torch_reference  # noqa: E402
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


@pytest.fixture(scope="module")
def tiny_xattn(tiny):
    """The same towers under a cross-attention fusion head: every graph of its bundle is a variant."""
    from lugha.training.fusion import build_head
    from lugha.training.model import build_model

    model, tok = tiny
    xattn = build_model(model.cfg, tok.vocab_size).eval()
    xattn.fusion_head = build_head("xattn", 3, model.cfg.embed_dim, num_patches=4, attn_heads=2, max_tokens=6).eval()
    return xattn, tok


def _image(model, tok):
    rng = np.random.default_rng(0)
    return {"pixel_values": rng.standard_normal((2, 3, model.cfg.preprocess.size, model.cfg.preprocess.size)).astype(np.float32)}


def _text(model, tok):
    ids, mask = tok(["habari ya asubuhi", "ọmọ náà ń sùn lórí ibùsùn"])
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _fusion(model, tok):
    rng = np.random.default_rng(1)
    d = model.cfg.embed_dim
    head = fusion_head_of(model)
    if getattr(head, "input_kind", "embeds") == "tokens":  # the second row: a shorter text, and no image
        mask = np.array([[1] * 5, [1, 1, 0, 0, 0]], np.int64)
        patches = rng.standard_normal((2, head.num_patches, d)).astype(np.float32)
        patches[1] = 0
        tokens = rng.standard_normal((2, 5, d)).astype(np.float32) * mask[..., None]
        return {"image_patches": patches, "text_tokens": tokens.astype(np.float32), "text_mask": mask}
    return {"image_embeds": rng.standard_normal((2, d)).astype(np.float32),
            "text_embeds": rng.standard_normal((2, d)).astype(np.float32)}


EXPORT_TESTS = {"image_encoder": _image, "text_encoder": _text, "fusion_head": _fusion}
# (spec name, model) pairs whose variant each test exports: the registered spec as a plain run has it, and
# as a cross-attention run has it (extra encoder outputs; the head on patches and tokens)
VARIANTS = [(n, "tiny") for n in sorted(EXPORT_TESTS)] + [(n, "tiny_xattn") for n in sorted(EXPORT_TESTS)]


def test_every_registered_spec_has_an_export_test():
    missing = sorted(set(SPECS) - set(EXPORT_TESTS))
    assert not missing, f"export specs without a tiny export test: {missing}"


def test_fusion_head_applies_only_to_runs_that_trained_one(tiny):
    from lugha.training.model import build_model

    model, tok = tiny
    assert [s.name for s in specs_for(model)] == ["image_encoder", "text_encoder", "fusion_head"]
    plain = build_model(model.cfg, tok.vocab_size)
    assert [s.name for s in specs_for(plain)] == ["image_encoder", "text_encoder"]


def test_a_cross_attention_head_adds_patch_and_token_outputs_to_the_encoders(tiny_xattn, tiny):
    model, _ = tiny_xattn
    specs = specs_for(model)
    assert [s.name for s in specs] == ["image_encoder", "text_encoder", "fusion_head"]
    assert [s.output_names() for s in specs] == [("image_embeds", "image_patches"), ("text_embeds", "text_tokens"),
                                                 ("logits",)]
    assert specs[2].input_names() == ("image_patches", "text_tokens", "text_mask")
    d = model.cfg.embed_dim
    assert specs[0].outputs(model)[1].shape == ("batch", 4, d) and specs[1].outputs(model)[1].shape == ("batch", "tokens", d)
    plain = [s.output_names() for s in specs_for(tiny[0])]  # the registry itself is left as it was
    assert plain == [("image_embeds",), ("text_embeds",), ("logits",)] and SPECS["image_encoder"].patch_grid == 0


@pytest.mark.parametrize("size,grid", [(7, 3), (1, 2), (4, 2), (5, 5)])
def test_the_patch_pooling_matrix_is_adaptive_average_pooling(size, grid):
    fmap = torch.randn(2, 3, size, size + 1)
    want = torch.nn.functional.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)  # what training caches
    got = torch.from_numpy(grid_pool_matrix(size, size + 1, grid)) @ fmap.flatten(2).transpose(1, 2)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name,which", VARIANTS)
def test_spec_exports_to_onnx_with_fp32_parity(name, which, request, tmp_path):
    model, tok = request.getfixturevalue(which)
    spec = specs_for(model, (name,))[0]
    inputs = EXPORT_TESTS[name](model, tok)
    check_tensors(inputs, spec.inputs(model), name)  # the sample follows the spec it exports
    done = export_onnx(spec, model, inputs, tmp_path / f"{name}.onnx")
    assert done.exporter in ("dynamo", "legacy") and done.path.is_file()
    # a different batch size than the export sample: the batch axis must really be dynamic
    more = {k: np.concatenate([v, v[:1]]) for k, v in inputs.items()}
    if name == "text_encoder":  # exported at 16 tokens, run at 5: fewer than the xattn head's max_tokens (6)
        ids, mask = tok(["ndiyo", "a", "ee"])
        more = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    ref = torch_reference(spec, model, more)
    out = onnx_runner(done.path)(more)
    check_tensors(out, spec.outputs(model), name)
    assert_parity(ref, out, tolerance_for(*spec.tolerances["fp32"], ref), name)


def test_dynamic_axes_are_read_off_the_tensor_specs(tiny, tiny_xattn):
    """Each spec states a tensor's shape once; the exporter's dynamic axes are its named dims."""
    axes = {s.name: s.dynamic_axes(tiny_xattn[0]) for s in specs_for(tiny_xattn[0])}
    assert axes["text_encoder"] == {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "text_embeds": {0: "batch"}, "text_tokens": {0: "batch", 1: "tokens"}}
    assert axes["image_encoder"] == {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"},
                                     "image_patches": {0: "batch"}}
    assert axes["fusion_head"] == {"image_patches": {0: "batch"}, "text_tokens": {0: "batch", 1: "tokens"},
                                   "text_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    head = next(s for s in specs_for(tiny[0]) if s.name == "fusion_head")
    assert head.dynamic_axes(tiny[0]) == {"image_embeds": {0: "batch"}, "text_embeds": {0: "batch"},
                                          "logits": {0: "batch"}}
    for spec in specs_for(tiny[0]):  # the names the exporter is given are the specs' tensors, in order
        assert list(spec.dynamic_axes(tiny[0], "NHWC")) == [*spec.input_names(), *spec.output_names()]
