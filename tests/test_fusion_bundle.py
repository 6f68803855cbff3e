"""Classify runs end to end, one per head (configs/classify-test-tiny.yaml on real demo images): `lugha eval`
reports the head's accuracy (missing sides only for heads that skip them), `lugha export` writes a bundle
with a `fusion_head` graph that passes parity and the per-language head-accuracy gate at each precision,
and the runtime's classify path gives the logits the trained head gives on the training-time features."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lugha.cli import main  # noqa: E402
from lugha.training.fusion import HEAD_KINDS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LANGS = ["en", "sw", "yo"]


@pytest.fixture(scope="module")
def runs(demo_small, tmp_path_factory):
    """One trained classify run per head kind, sharing one feature cache."""
    from lugha.training.train_config import load_train_config
    from lugha.training.trainer import train

    root = tmp_path_factory.mktemp("fusionruns")
    out = {}
    for kind in HEAD_KINDS:
        cfg = load_train_config(REPO / "configs" / "classify-test-tiny.yaml", [
            f"data.manifest={demo_small}", f"data.cache_dir={root / 'cache'}", f"data.languages=[{', '.join(LANGS)}]",
            f"classify.head={kind}"])
        train(cfg, root / kind, show_progress=False, say=lambda m: None)
        out[kind] = root / kind
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_eval_reports_head_accuracy_and_missing_sides_only_where_the_head_skips(kind, runs, capsys):
    assert main(["eval", str(runs[kind]), "--split", "train", "--languages", ",".join(LANGS), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "classify" and report["head"] == kind and set(report["languages"]) == set(LANGS)
    skips = kind in ("late", "xattn")
    assert report["skips_missing"] == skips
    for m in report["languages"].values():
        assert 0.0 <= m["acc"] <= 1.0 and m["n"] > 0 and "majority_acc" in m
        assert ("acc_image_only" in m and "acc_text_only" in m) == skips
    assert report["mean"]["mean_acc"] == pytest.approx(np.mean([m["acc"] for m in report["languages"].values()]))
    assert main(["eval", str(runs[kind]), "--split", "train"]) == 0
    table = capsys.readouterr().out
    assert f"{kind} fusion head" in table and ("image only" in table) == skips
    assert main(["eval", str(runs[kind]), "--baseline", str(runs[kind])]) == 1  # retention is retrieval-only
    assert "--baseline" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_export_gates_the_fusion_head_and_the_runtime_reproduces_the_trained_head(kind, runs, tmp_path, capsys):
    from lugha.export.bundle_writer import read_golden
    from lugha.export.graph_runners import onnx_runner
    from lugha.manifest import load_bundle_manifest
    from lugha.parity import assert_parity
    from lugha.runtimes.bundle import open_bundle
    from lugha.training.classify import load_classify_parts, load_features_for, predict
    from lugha.training.classify_eval import evaluate_classify_run
    from lugha.training.fusion import project_features
    from lugha.training.optim import autocast_for

    run, out = runs[kind], tmp_path / "bundle"
    # --max-drop 100: a tiny random classify run with a few held-out rows a language; no margin a real user
    # would set can be decided at that n, and this test is about the head's graph, not the gate.
    rc = main(["export", str(run), "--out", str(out), "--precision", "fp32,int8", "--max-drop", "100",
               "--calib-samples", "8", "--eval-split", "train", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"]
    head_parity = [r for r in report["parity"] if r["graph"].startswith("fusion_head/")]
    assert {r["graph"] for r in head_parity} == {"fusion_head/onnx/fp32", "fusion_head/onnx/int8"}
    assert all(r["ok"] for r in report["parity"])
    print(f"{kind}: fusion_head parity max abs " + ", ".join(f"{r['graph']} {r['max_abs']:.3g}" for r in head_parity))
    gated = [r for r in report["accuracy"] if r["metric"] == "head_acc"]
    assert {(r["candidate"], r["lang"]) for r in gated} == {(c, lang) for c in ("onnx/fp32", "onnx/int8") for lang in LANGS}

    m = load_bundle_manifest(out)
    graphs = {g.key: g for g in m.graphs}
    model, classes, *_ = load_classify_parts(run)
    assert graphs["fusion_head/onnx/int8"].quantization["labels"] == classes
    outputs = [t.name for t in graphs["image_encoder/onnx/fp32"].outputs]
    assert outputs == (["image_embeds", "image_patches"] if kind == "xattn" else ["image_embeds"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Fusion head" in card and ("| image only |" in card) == (kind in ("late", "xattn"))
    for g in m.graphs:  # golden samples (missing-side rows included) reproduce with a fresh session
        inputs, want = read_golden(out, g.golden)
        assert_parity(want, onnx_runner(out / g.file)(inputs), g.tolerance, g.key)
    # the export's PyTorch reference is what `lugha eval` measures on the same rows
    ev = evaluate_classify_run(run, split="train", languages=LANGS)
    for lang in LANGS:
        assert m.metrics["torch/fp32"][lang]["head_acc"] == pytest.approx(ev["languages"][lang]["acc"])
        assert ("head_acc_text_only" in m.metrics["onnx/int8"][lang]) == (kind in ("late", "xattn"))

    # runtime: the bundle's logits on real rows = the trained head on the training-time (cached) features
    model, classes, tok, cfg, _, digest = load_classify_parts(run)
    cc = cfg.classify
    autocast, _, precision = autocast_for(torch.device("cpu"), "fp32")
    pairs, feats = load_features_for(model, model.cfg, tok, cfg.data.manifest, "train", LANGS, "label", kind=kind,
                                     digest=digest, grid=cc.patch_grid, max_tokens=cc.max_tokens, batch_size=16,
                                     device=torch.device("cpu"), autocast=autocast, precision=precision,
                                     cache_dir=cfg.data.cache_dir, show_progress=False)
    want = predict(model.fusion_head, project_features(model, feats, pairs, classes))[:6]
    images = [pairs.image_paths[int(i)] for i in pairs.image_index[:6]]
    with open_bundle(out, backend="onnxruntime", precision="fp32") as b:
        got = b.fusion_logits(images, pairs.texts[:6])
        top = b.classify(image=images[0], text=pairs.texts[0], lang="sw", k=len(classes))
    print(f"{kind}: runtime vs trained head logits max abs {np.abs(got - want).max():.3g}")
    np.testing.assert_allclose(got, want, atol=2e-4 * max(1.0, float(np.abs(want).max())))
    assert sorted(name for name, _ in top) == sorted(classes) and top[0][0] == classes[int(want[0].argmax())]


@pytest.mark.slow
def test_a_cross_attention_bundle_refuses_tflite_and_leaves_nothing(runs, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["export", str(runs["xattn"]), "--out", str(out), "--formats", "onnx,tflite"]) == 1
    err = capsys.readouterr().err
    assert "--formats" in err and "ONNX only" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))
