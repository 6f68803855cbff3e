"""Training on CPU with the tiny twin on real demo images: learning, exact resume, feature cache, CLI."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lugha.cli import main  # noqa: E402
from lugha.cli.eval import format_report  # noqa: E402
from lugha.errors import ConfigError  # noqa: E402
from lugha.training.checkpoint import CheckpointError, find_checkpoint, load_run_model  # noqa: E402
from lugha.training.train_config import load_train_config  # noqa: E402
from lugha.training.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LANGS = "[en, sw, yo]"


def tiny(manifest, cache, *overrides):
    base = [f"data.manifest={manifest}", f"data.cache_dir={cache}", f"data.languages={LANGS}", "data.batch_size=16"]
    return load_train_config(REPO / "configs" / "test-tiny.yaml", base + list(overrides))


def rows(run, kind=None):
    out = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out if kind is None or r["kind"] == kind]


def weights(run, which="last"):
    from safetensors.torch import load_file

    return load_file(str(Path(run) / which / "trainable.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    assert sorted(a) == sorted(b)
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_train_loss_goes_down_and_run_folder_is_complete(demo_small, tmp_path):
    # projection heads on cached features: ~175 steps in a few seconds
    cfg = tiny(demo_small, tmp_path / "cache", "loop.epochs=25", "model_overrides.adapter.kind=projection")
    result = train(cfg, tmp_path / "run", show_progress=False, say=lambda m: None)
    epochs = rows(tmp_path / "run", "epoch")
    assert result.stopped == "done" and len(epochs) == 25 and len(result.epoch_seconds) == 25
    chance = math.log(cfg.data.batch_size)  # InfoNCE of embeddings that tell nothing apart
    assert epochs[-1]["loss"] < min(0.9 * epochs[0]["loss"], chance - 0.3), epochs
    for name in ("config.yaml", "model_config.json", "last/trainable.safetensors", "last/state.pt",
                 "best/trainable.safetensors", "best/meta.json"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = load_train_config(tmp_path / "run" / "config.yaml")
    assert Path(saved.data.manifest).is_absolute() and saved.loop.epochs == 25
    evals = rows(tmp_path / "run", "eval")
    assert len(evals) == 25 and all(0.0 <= e["mean_r1"] <= 1.0 for e in evals)
    best = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert best["metrics"]["mean_r1"] == max(e["mean_r1"] for e in evals)
    # only the trainable tensors are stored: the heads, not the towers
    n_saved = sum(t.numel() for t in weights(tmp_path / "run").values())
    model = load_run_model(tmp_path / "run", "last")[0]
    assert n_saved < sum(p.numel() for p in model.parameters()) / 50


@pytest.mark.parametrize("stop_at", [3, 11], ids=["mid-first-epoch", "mid-second-epoch"])
def test_resume_is_bitwise_identical(demo_small, tmp_path, stop_at):
    cfg = tiny(demo_small, tmp_path / "cache", "loop.epochs=2", "loop.eval_every=4")
    quiet = dict(show_progress=False, say=lambda m: None)
    full = train(cfg, tmp_path / "full", **quiet)
    assert full.step > stop_at + 2
    part = train(cfg, tmp_path / "part", stop_after_steps=stop_at, **quiet)
    assert part.stopped == "interrupted" and part.step == stop_at
    assert not (tmp_path / "part" / "last" / "trainable.safetensors").read_bytes() == \
        (tmp_path / "full" / "last" / "trainable.safetensors").read_bytes()
    resumed = train(None, tmp_path / "part", resume=True, **quiet)
    assert resumed.step == full.step and resumed.best == full.best
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert_same_weights(weights(tmp_path / "full", "best"), weights(tmp_path / "part", "best"))
    assert rows(tmp_path / "full") == rows(tmp_path / "part")


@pytest.mark.parametrize("adapter", ["projection", "lora"])
def test_feature_cache_matches_uncached_training(demo_small, tmp_path, adapter):
    args = ("loop.epochs=2", f"model_overrides.adapter.kind={adapter}")
    quiet = dict(show_progress=False, say=lambda m: None)
    cached = train(tiny(demo_small, tmp_path / "cache", *args), tmp_path / "cached", **quiet)
    files = sorted((tmp_path / "cache" / "features").glob("*.shards-*/shard-*.npy"))  # sharded: any world size
    kinds = {f.parent.name.split("-")[0] for f in files}
    assert kinds == ({"image", "text"} if adapter == "projection" else {"image"})
    stamps = [f.stat().st_mtime_ns for f in files]
    plain = train(tiny(demo_small, tmp_path / "cache", *args, "runtime.feature_cache=false"), tmp_path / "plain", **quiet)
    assert_same_weights(weights(tmp_path / "cached"), weights(tmp_path / "plain"), atol=1e-4)
    for a, b in zip(rows(tmp_path / "cached"), rows(tmp_path / "plain")):
        for k, v in a.items():
            assert v == pytest.approx(b[k], abs=1e-3), (k, a, b)
    assert cached.best == pytest.approx(plain.best, abs=1e-3)
    again = train(tiny(demo_small, tmp_path / "cache", *args), tmp_path / "again", **quiet)  # cache hit
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert_same_weights(weights(tmp_path / "cached"), weights(tmp_path / "again"))
    assert again.best == cached.best


def test_max_steps_resume_guards_and_frozen_weight_check(demo_small, tmp_path):
    quiet = dict(show_progress=False, say=lambda m: None)
    cfg = tiny(demo_small, tmp_path / "cache", "loop.max_steps=3", "model_overrides.adapter.kind=projection")
    result = train(cfg, tmp_path / "run", **quiet)
    assert result.stopped == "max_steps" and result.step == 3
    again = train(None, tmp_path / "run", resume=True, **quiet)  # finished: nothing more to do
    assert (again.step, again.stopped) == (3, "max_steps")
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path / "run", **quiet)
    changed = tiny(demo_small, tmp_path / "cache", "loop.max_steps=3", "optim.lr=0.1",
                   "model_overrides.adapter.kind=projection")
    with pytest.raises(ConfigError, match="optim.lr"):
        train(changed, tmp_path / "run", resume=True, **quiet)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(None, tmp_path / "nothing", resume=True, **quiet)
    # random-init frozen towers are rebuilt from the seed: another seed must be refused, not loaded silently
    cfg_file = tmp_path / "run" / "last" / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(CheckpointError, match="frozen weights differ"):
        load_run_model(tmp_path / "run", "last")


def test_cli_help_teaches():
    for cmd, words in (("train", ["--resume", "--set", "lugha train configs/", "checkpoint", "--nproc-per-node",
                                  "--rdzv-endpoint", "torchrun"]),
                       ("eval", ["--baseline", "--split", "chance", "lugha eval runs/"])):
        proc = subprocess.run([sys.executable, "-m", "lugha.cli", cmd, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0
        for w in words:
            assert w in proc.stdout, (cmd, w)


def test_cli_train_then_eval_with_baseline(demo_small, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--set", f"data.manifest={demo_small}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--set", f"data.languages={LANGS}", "--set", "loop.epochs=1"]
    assert main(["train", str(REPO / "configs" / "test-tiny.yaml"), *common, "--out", str(run), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["stopped"] == "done" and outcome["steps"] > 0
    assert main(["eval", str(run), "--split", "test", "--languages", "en,sw,yo", "--json", "--baseline", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["languages"]) == {"en", "sw", "yo"}
    en = report["languages"]["en"]
    assert en["n_images"] == en["n_texts"] > 0 and en["chance_t2i_r1"] == pytest.approx(1 / en["n_images"])
    assert 0 < en["chance_label_acc"] < 1 and "label_acc" in en
    assert report["retention"]["kept"]["t2i_r5"] == pytest.approx(100.0)
    table = format_report(report)
    assert "| en " in table and "| mean " in table and "chance" in table and "kept %" in table
    assert main(["train", str(REPO / "configs" / "test-tiny.yaml"), "--set", "optim.lr=fast", "--out", str(run)]) == 1
    assert "optim.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(demo_small, tmp_path):
    """A real SIGKILL mid-training (no chance to clean up), then --resume: same final weights."""
    common = ["--set", f"data.manifest={demo_small}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
              "--set", f"data.languages={LANGS}", "--set", "loop.epochs=20", "--set", "loop.checkpoint_every=2"]
    cmd = [sys.executable, "-m", "lugha.cli", "train", str(REPO / "configs" / "test-tiny.yaml"), *common, "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = tmp_path / "killed" / "last" / "meta.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(meta.read_text())["step"] >= 4:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # a kill during the checkpoint swap leaves `.last.old`: find_checkpoint knows where to look
    step_killed = json.loads((find_checkpoint(tmp_path / "killed") / "meta.json").read_text())["step"]
    total = json.loads((tmp_path / "full" / "last" / "meta.json").read_text())["step"]
    assert 0 < step_killed < total
    resumed = subprocess.run([sys.executable, "-m", "lugha.cli", "train", "--resume", str(tmp_path / "killed"),
                              "--quiet"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))
    assert rows(tmp_path / "full") == rows(tmp_path / "killed")


def test_text_features_batched_by_length_match_one_text_at_a_time():
    """The feature cache batches texts by token length inside each window and puts them back in order:
    every row must be that text's own features, whatever it was batched with."""
    import contextlib

    from lugha.config import get_model_config
    from lugha.training.feature_cache import compute_text_features
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config("test-tiny")
    tok = load_text_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size).eval()
    texts = ["a", "a very long caption about a dog that runs across a wide green field", "mbwa", "ọmọ náà ń sùn",
             "kare", "uso wenye tabasamu kubwa sana", "b", "fuska mai murmushi"]
    blocks = list(compute_text_features(model, tok, texts, 3, "cpu", contextlib.nullcontext, window=5))
    assert [len(b) for b in blocks] == [5, 3]  # one block per window, in order
    got = torch.from_numpy(__import__("numpy").concatenate(blocks))
    with torch.no_grad():
        one = torch.cat([model.text_features(*tok([t])) for t in texts])
    torch.testing.assert_close(got, one, atol=1e-5, rtol=1e-5)
