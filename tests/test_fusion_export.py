"""Fusion heads through the export specs: which spec applies, ONNX export, fp32 parity with missing sides;
the head's golden rows and label-accuracy gate; the advisor's view of every head kind."""
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


def test_every_head_is_the_fusion_head_graph_the_xattn_one_on_patches_and_tokens():
    from types import SimpleNamespace

    cfg = get_model_config("test-tiny")
    for kind in HEAD_KINDS:  # what the specs look at: the head attribute (a LowClip holds more)
        model = with_head(SimpleNamespace(cfg=cfg, prototype_head=None), kind)
        specs = specs_for(model)
        assert [s.name for s in specs] == ["image_encoder", "text_encoder", "fusion_head"], kind
        assert isinstance(specs[2], CrossAttentionHeadSpec) == (kind == "xattn")
        assert SPECS["fusion_head"].applies(model) == (kind != "xattn")  # the registered spec: embeddings only
        assert CrossAttentionHeadSpec().applies(model) == (kind == "xattn")
        assert specs[2].outputs(model)[0].shape == ("batch", C)
        assert specs[2].graph_info(model)["missing"] == ("skipped" if kind in ("late", "xattn") else "zero-filled")
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
    print(f"{kind}: fp32 parity max abs {np.abs(ref['logits'] - out['logits']).max():.3g}")


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_the_advisor_sees_the_norms_and_softmaxes_inside_every_head_kind(kind, tiny):
    from lugha.export.advisor import scan_head, scan_modules

    model = with_head(tiny, kind)
    found = scan_head(model.fusion_head)
    # early/prototype normalise both sides (prototype its prototypes too), late also mixes log-softmaxes
    # under a softmax of its weights, xattn's attention is a softmax
    want = {"early": {"l2_norm": 2}, "late": {"l2_norm": 2, "softmax_head": 3}, "xattn": {"softmax_head": 1},
            "prototype": {"l2_norm": 4}}[kind]
    assert found == want
    head_findings = {f.kind: f for f in scan_modules(model) if f.graph == "fusion_head"}
    assert {k: f.count for k, f in head_findings.items()} == want
    assert all("stays float" in f.action for f in head_findings.values())


def test_head_golden_rows_add_one_image_missing_and_one_text_missing_row():
    from lugha.export.fusion_head import head_golden

    rng = np.random.default_rng(0)
    img = {"image_embeds": rng.standard_normal((3, 4)).astype(np.float32),
           "image_patches": rng.standard_normal((3, 2, 4)).astype(np.float32)}
    txt = {"text_embeds": rng.standard_normal((3, 4)).astype(np.float32),
           "text_tokens": rng.standard_normal((3, 2, 4)).astype(np.float32)}
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], np.int64)
    g = head_golden(("image_embeds", "text_embeds"), img, txt, mask)
    assert g["image_embeds"].shape == (5, 4)
    assert not g["image_embeds"][3].any() and np.array_equal(g["text_embeds"][3], txt["text_embeds"][0])
    assert not g["text_embeds"][4].any() and np.array_equal(g["image_embeds"][4], img["image_embeds"][1])
    x = head_golden(("image_patches", "text_tokens", "text_mask"), img, txt, mask)
    assert x["text_mask"].shape == (5, 2)  # the mask is cut to the token states the text graph gave
    assert np.array_equal(x["text_mask"][:3], mask[:, :2]) and not x["text_mask"][4].any()
    assert not x["image_patches"][3].any() and x["text_mask"][3].all()
