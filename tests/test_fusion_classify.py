"""`task: classify` through the trainer on real demo images with the tiny twin: it learns, checkpoints
the head only, reloads for export, resumes exactly, and refuses a retrieval metric before caching."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lugha.errors import ConfigError  # noqa: E402
from lugha.training.classify import load_classify_run  # noqa: E402
from lugha.training.train_config import load_train_config  # noqa: E402
from lugha.training.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cfg(manifest, cache, *overrides):
    base = [f"data.manifest={manifest}", f"data.cache_dir={cache}", "data.languages=[en, sw, yo]"]
    return load_train_config(REPO / "configs" / "classify-test-tiny.yaml", base + list(overrides))


def rows(run, kind):
    return [r for r in map(json.loads, (Path(run) / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["early", "xattn"])
def test_classify_run_learns_saves_the_head_and_reloads(head, demo_small, tmp_path):
    from lugha.export.specs import CrossAttentionHeadSpec, specs_for

    run = tmp_path / "run"
    result = train(cfg(demo_small, tmp_path / "cache", f"classify.head={head}"), run, show_progress=False,
                   say=lambda m: None)
    assert result.stopped == "done" and result.step > 0 and result.best is not None
    losses = [r["loss"] for r in rows(run, "epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    evals = rows(run, "eval")
    assert evals and {"mean_acc", "mean_acc_image_only", "mean_acc_text_only"} <= set(evals[-1])
    meta = json.loads((run / "best" / "meta.json").read_text())
    assert meta["head"] == head and len(meta["classes"]) >= 2
    from safetensors.torch import load_file

    saved = load_file(str(run / "best" / "trainable.safetensors"))
    assert saved and all(k.startswith("fusion_head.") for k in saved)  # the frozen towers are not in it
    model, classes, _, _ = load_classify_run(run)
    assert classes == meta["classes"] and not any(p.requires_grad for p in model.parameters())
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v)
    assert model.fusion_head.classes == classes and model.fusion_head.label_field == "label"
    assert [s.name for s in specs_for(model)] == ["image_encoder", "text_encoder", "fusion_head"]
    assert isinstance(specs_for(model)[2], CrossAttentionHeadSpec) == (head == "xattn")


@pytest.mark.slow
def test_classify_resume_ends_where_an_unbroken_run_does(demo_small, tmp_path):
    from safetensors.torch import load_file

    c = cfg(demo_small, tmp_path / "cache", "classify.head=late")
    train(c, tmp_path / "a", show_progress=False, say=lambda m: None)
    stopped = train(c, tmp_path / "b", stop_after_steps=5, show_progress=False, say=lambda m: None)
    assert stopped.stopped == "interrupted" and stopped.step == 5
    done = train(None, tmp_path / "b", resume=True, show_progress=False, say=lambda m: None)
    assert done.stopped == "done"
    a, b = (load_file(str(tmp_path / r / "last" / "trainable.safetensors")) for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in rows(tmp_path / "a", "train")] == [r["loss"] for r in rows(tmp_path / "b", "train")]


def test_a_retrieval_metric_for_keep_best_is_refused_before_any_caching(demo_small, tmp_path):
    with pytest.raises(ConfigError, match="loop.keep_best"):
        train(cfg(demo_small, tmp_path / "cache", "loop.keep_best=mean_r1"), tmp_path / "run", show_progress=False,
              say=lambda m: None)
    assert not (tmp_path / "cache").exists()
