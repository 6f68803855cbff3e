"""Fusion heads through the export specs: which spec applies, ONNX export, fp32 parity with missing sides."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lugha.config import get_model_config  # noqa: E402
from lugha.export.graph_runners import onnx_runner  # noqa: E402
from lugha.export.onnx_export import export_onnx  # noqa: E402
from lugha.export.specs import SPECS, CrossAttentionHeadSpec, specs_for, tolerance_for, torch_reference  # noqa: E402
from lugha.parity import assert_parity, check_tensors  # noqa: E402
from lugha.training.fusion import HEAD_KINDS, build_head  # noqa: E402

C, P, L = 5, 4, 7


@pytest.fixture(scope="module")
def tiny():
    from lugha.training.model import build_model

    # a head never sees token ids: a small vocabulary spares loading the 250k-piece tokenizer
    return build_model(get_model_config("test-tiny"), vocab_size=1000).eval()


def with_head(model, kind):
    model.fusion_head = build_head(kind, C, model.cfg.embed_dim, num_patches=P, hidden=24, attn_heads=2, seed=1).eval()
    return model


def sample(model, b: int = 6) -> dict[str, np.ndarray]:
    """Rows with both sides, then one with the image missing and one with the text missing."""
    rng, d = np.random.default_rng(0), model.cfg.embed_dim
    if model.fusion_head.input_kind == "tokens":
        mask = np.ones((b, L), np.int64)
        mask[1, 4:] = 0
        patches = rng.standard_normal((b, P, d)).astype(np.float32)
        patches[-2] = 0
        mask[-1] = 0
        tokens = rng.standard_normal((b, L, d)).astype(np.float32) * mask[..., None]
        return {"image_patches": patches, "text_tokens": tokens.astype(np.float32), "text_mask": mask}
    img, txt = (rng.standard_normal((b, d)).astype(np.float32) for _ in range(2))
    img[-2], txt[-1] = 0, 0
    return {"image_embeds": img, "text_embeds": txt}


def test_the_registered_spec_takes_embedding_heads_and_the_xattn_spec_the_token_head():
    from types import SimpleNamespace

    cfg = get_model_config("test-tiny")
    for kind in HEAD_KINDS:  # what the specs look at: the head attribute (a LowClip holds more)
        model = with_head(SimpleNamespace(cfg=cfg, prototype_head=None), kind)
        names = [s.name for s in specs_for(model)]
        assert ("fusion_head" in names) == (kind != "xattn"), kind
        assert CrossAttentionHeadSpec().applies(model) == (kind == "xattn")
        assert SPECS["fusion_head"].outputs(model)[0].shape == ("batch", C)
    assert [s.name for s in specs_for(SimpleNamespace(cfg=cfg, prototype_head=None))] == ["image_encoder",
                                                                                         "text_encoder"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_each_head_exports_to_onnx_with_fp32_parity_including_missing_sides(kind, tiny, tmp_path):
    model = with_head(tiny, kind)
    spec = CrossAttentionHeadSpec() if kind == "xattn" else SPECS["fusion_head"]
    inputs = sample(model)
    check_tensors(inputs, spec.inputs(model), kind)
    done = export_onnx(spec, model, {k: v[:3] for k, v in inputs.items()}, tmp_path / f"{kind}.onnx")
    ref = torch_reference(spec, model, inputs)  # another batch size than the export sample
    out = onnx_runner(done.path)(inputs)
    check_tensors(out, spec.outputs(model), kind)
    assert np.isfinite(out["logits"]).all()
    assert_parity(ref, out, tolerance_for(*spec.tolerances["fp32"], ref), kind)
    if kind == "late":  # the exported graph skips a missing side exactly like the torch head
        head = model.fusion_head
        with torch.no_grad():
            li, lt = head.branches(*(torch.from_numpy(inputs[n]) for n in spec.input_names()))
        np.testing.assert_allclose(out["logits"][-2], lt[-2].numpy(), atol=1e-5)
        np.testing.assert_allclose(out["logits"][-1], li[-1].numpy(), atol=1e-5)
