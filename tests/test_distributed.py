"""Training in 2 processes (`lugha train --nproc-per-node 2`: torchrun, gloo on loopback) with the tiny twin
on real demo images: it trains like one process with the same global batch, and a kill -9 of one rank then
`--resume` ends where an uninterrupted run does; its checkpoint also resumes in one process."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lugha.cli import build_parser  # noqa: E402
from lugha.cli.train import worker_argv  # noqa: E402
from lugha.errors import ConfigError  # noqa: E402
from lugha.training.distributed import Dist, check_batch, launch_args, rank_batches, shard_bounds  # noqa: E402
from lugha.training.train_config import load_train_config  # noqa: E402
from lugha.training.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# LoRA on the live text tower (DDP over its adapters) over cached image features; no dropout (LoRA's or the
# tower's), so one process and two draw nothing different; a mid-epoch validation (eval_every) and frequent
# checkpoints
TOWER = "{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, " \
        "hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}"
SETTINGS = ["data.languages=[en, sw, yo]", "data.batch_size=16", "loop.epochs=10", "loop.eval_every=5",
            "loop.checkpoint_every=2"]
NO_DROPOUT = ["model_overrides.adapter.dropout=0.0", f"model_overrides.text_tower.tiny={TOWER}"]


def sets(manifest, cache, dropout: bool = False) -> list[str]:
    return [f"data.manifest={manifest}", f"data.cache_dir={cache}", *SETTINGS, *([] if dropout else NO_DROPOUT)]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lugha.cli", "train", str(REPO / "configs" / "test-tiny.yaml"), *args]


def set_flags(manifest, cache, dropout: bool = False) -> list[str]:
    return [x for s in sets(manifest, cache, dropout) for x in ("--set", s)]


def rows(run) -> list[dict]:
    out = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out]


def weights(run, which="last") -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run) / which / "trainable.safetensors"))


def assert_rows_close(a: list[dict], b: list[dict], atol: float) -> None:
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys(), (x, y)
        for k, v in x.items():
            assert (v == pytest.approx(y[k], abs=atol, rel=0)) if isinstance(v, float) else v == y[k], (k, x, y)


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def died_by_signal(proc: subprocess.CompletedProcess) -> bool:
    """A worker killed by a signal (the launcher's "rank 0: exit -6"), not a Python error in lugha (a positive
    exit; torchrun then stops the other ranks with SIGTERM, -15)."""
    codes = [int(c) for c in re.findall(r"rank \d+: exit (-?\d+)", proc.stderr)]
    return proc.returncode != 0 and any(c < 0 and c != -15 for c in codes) and not any(c > 0 for c in codes)


def run_twice_on_a_signal(command: list[str], what: str, before_again=lambda: None) -> subprocess.CompletedProcess:
    """Run ``command``; when a worker died by a signal (see :func:`run_two`), warn with its stderr, call
    ``before_again`` and run it once more. A Python error is returned as it is."""
    proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    if died_by_signal(proc):
        warnings.warn(f"{what}: a worker died by a signal, ran again:\n{proc.stderr[-1500:]}")
        before_again()
        proc = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    return proc


def run_two(manifest, tmp: Path, dropout: bool) -> Path:
    """An uninterrupted 2-process run in ``tmp / "two"``. Once in CI a worker of this run aborted inside torch
    ("terminate called without an active exception", SIGABRT; not reproduced in 58 runs on the dev machine,
    quiet or loaded): that run is retried once from scratch, with a warning carrying its stderr, so the
    reference the tests compare against is still one uninterrupted run. A Python error is not retried."""
    command = cli(*set_flags(manifest, tmp / "cache", dropout), "--out", str(tmp / "two"), "--nproc-per-node", "2",
                  "--json")
    proc = run_twice_on_a_signal(command, "2-process run", lambda: shutil.rmtree(tmp / "two", ignore_errors=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout[proc.stdout.index("{"):])  # rank 0's report, once
    assert outcome["stopped"] == "done" and outcome["steps"] == 70
    return tmp / "two"


@pytest.fixture(scope="module")
def two_procs(demo_small, tmp_path_factory) -> Path:
    return run_two(demo_small, tmp_path_factory.mktemp("ddp"), dropout=False)


@pytest.fixture(scope="module")
def two_procs_dropout(demo_small, tmp_path_factory) -> Path:
    return run_two(demo_small, tmp_path_factory.mktemp("ddp_dropout"), dropout=True)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(demo_small, two_procs, tmp_path):
    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml", sets(demo_small, tmp_path / "cache"))
    one = train(cfg, tmp_path / "one", show_progress=False, say=lambda m: None)
    assert one.stopped == "done" and one.step == 70
    a, b = rows(tmp_path / "one"), rows(two_procs)
    assert sum(r["kind"] == "eval" for r in a) == 22  # 10 at epoch ends, 12 mid-epoch (every 5 steps)
    assert_rows_close(a, b, atol=1e-5)  # every train loss, lr, eval metric and epoch mean
    for which in ("last", "best"):
        w1, w2 = weights(tmp_path / "one", which), weights(two_procs, which)
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=0, msg=k)
    assert json.loads((two_procs / "last" / "meta.json").read_text())["step"] == 70


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker ``rank`` among ``agent``'s children (from /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == agent and f"RANK={rank}".encode() in (d / "environ").read_bytes().split(b"\0"):
                return int(d.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def kill_rank_1_then_resume(manifest, cache: Path, run: Path, dropout: bool) -> None:
    """Start a 2-process run, kill -9 rank 1 once a checkpoint past step 6 exists, then --resume it."""
    agent = subprocess.Popen(cli(*set_flags(manifest, cache, dropout), "--out", str(run), "--nproc-per-node", "2",
                                 "--quiet"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    meta, deadline, victim = run / "last" / "meta.json", time.monotonic() + 300, None
    while time.monotonic() < deadline and agent.poll() is None:
        try:
            if json.loads(meta.read_text())["step"] >= 6:
                victim = _worker_pid(agent.pid, rank=1)
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert victim is not None, "training ended before rank 1 could be killed"
    os.kill(victim, signal.SIGKILL)
    err = agent.communicate(timeout=120)[1]
    assert agent.returncode != 0 and "--resume" in err, err[-2000:]  # torchrun stopped rank 0 and said how
    killed_at = json.loads((run / "last" / "meta.json").read_text())["step"]
    assert 6 <= killed_at < 70
    shutil.copytree(run, run.with_name(run.name + "_copy"))
    resume = [sys.executable, "-m", "lugha.cli", "train", "--resume", str(run), "--nproc-per-node", "2", "--quiet"]
    # resuming again after a signal death is what the launcher's message tells a user to do
    resumed = run_twice_on_a_signal(resume, "resumed 2-process run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def assert_same_run(run: Path, ref: Path) -> None:
    assert rows(run) == rows(ref)
    for which in ("last", "best"):
        w, r = weights(run, which), weights(ref, which)
        assert w.keys() == r.keys() and all(torch.equal(w[k], r[k]) for k in w), which


@pytest.mark.slow
def test_kill_9_of_one_rank_then_resume_ends_like_an_uninterrupted_run(demo_small, two_procs, tmp_path):
    run = tmp_path / "killed"
    kill_rank_1_then_resume(demo_small, two_procs.parent / "cache", run, dropout=False)
    assert_same_run(run, two_procs)  # CPU, fixed seed: identical to the uninterrupted 2-process run
    # the 2-process checkpoint resumes in one process too (same global batch: the same run to ~1e-6)
    one = train(None, tmp_path / "killed_copy", resume=True, show_progress=False, say=lambda m: None)
    assert one.step == 70
    assert_rows_close(rows(tmp_path / "killed_copy"), rows(two_procs), atol=1e-5)


@pytest.mark.slow
def test_with_dropout_each_rank_resumes_its_own_random_stream(demo_small, two_procs_dropout, tmp_path):
    """LoRA's and the tower's dropout draw per rank (other rows, other caption lengths): the checkpoint keeps
    every rank's RNG, so a killed and resumed run still ends exactly where the uninterrupted one does."""
    run = tmp_path / "killed"
    kill_rank_1_then_resume(demo_small, two_procs_dropout.parent / "cache", run, dropout=True)
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2 and not torch.equal(*(r["torch"] for r in state["rng_ranks"]))
    assert_same_run(run, two_procs_dropout)


def test_each_rank_reads_a_contiguous_slice_of_every_global_batch():
    batches = [list(range(100, 116)), list(range(200, 209)), [7, 3, 5]]
    for world in (1, 2, 3):
        slices = [rank_batches(batches, Dist(r, world)) for r in range(world)]
        for k, b in enumerate(batches):
            parts = [s[k] for s in slices]
            assert sum(parts, []) == b  # rank order = the global batch's order, so the loss sees it unchanged
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_bounds(9, 2) == [(0, 5), (5, 9)]
    with pytest.raises(ConfigError, match="data.batch_size"):
        check_batch(3, Dist(0, 2))


def test_launcher_arguments_for_one_node_and_for_two():
    one = launch_args(["cfg.yaml", "--out", "run"], 4)
    assert one == ["--nproc-per-node", "4", "--nnodes", "1", "--standalone", "-m", "lugha.cli", "train", "cfg.yaml",
                   "--out", "run"]
    two = launch_args(["--resume", "run"], 8, nnodes=2, rdzv_endpoint="node0:29500")
    assert two[:8] == ["--nproc-per-node", "8", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                       "node0:29500"] and two[-3:] == ["train", "--resume", "run"]
    with pytest.raises(ConfigError, match="--rdzv-endpoint"):
        launch_args([], 8, nnodes=2)


def test_workers_get_the_command_without_the_launcher_flags(tmp_path):
    argv = ["train", "configs/test-tiny.yaml", "--set", "loop.epochs=3", "--set", "data.languages=[en, sw]", "--out",
            str(tmp_path / "run"), "--nproc-per-node", "2", "--quiet"]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(["train", *worker_argv(args)])
    for field in ("config", "overrides", "out", "resume", "quiet", "json"):
        assert getattr(again, field) == getattr(args, field), field
    assert again.nproc_per_node is None
    resume = build_parser().parse_args(["train", "--resume", str(tmp_path / "run"), "--nproc-per-node", "2"])
    assert build_parser().parse_args(["train", *worker_argv(resume)]).resume == str(tmp_path / "run")


def test_the_launcher_checks_the_config_and_its_flags_before_starting_workers(tmp_path, capsys):
    from lugha.cli import main

    cfg = str(REPO / "configs" / "test-tiny.yaml")
    assert main(["train", cfg, "--set", "optim.lr=fast", "--out", str(tmp_path / "r"), "--nproc-per-node", "2"]) == 1
    assert "optim.lr" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["train", cfg, "--out", str(tmp_path / "r"), "--nnodes", "2", "--rdzv-endpoint", "node0:29500"]) == 1
    assert "--nproc-per-node" in capsys.readouterr().err
