"""`lugha train`: a thin layer over :func:`lugha.training.trainer.train` (torch is imported in run() only)."""
from __future__ import annotations

import argparse
import os
import sys

from lugha.cli._common import user_path

HELP = "Train adapters on a dataset (LowCLIP dual encoder)."
DESCRIPTION = """Train a LowCLIP-style dual encoder (frozen pretrained towers + LoRA or projection heads) on
a JSONL manifest. The config names a registry model (`lugha.config.list_models()`), the data and the
schedule; any field can be changed on the command line with --set (dotted keys, YAML values).

  lugha train configs/default.yaml --out runs/demo
  lugha train configs/english-only.yaml --out runs/en --set loop.epochs=3 --set optim.lr=2e-3
  lugha train configs/default.yaml --out runs/sw --set "data.languages=[sw, en]" \\
      --set model_overrides.adapter.kind=projection
  lugha train --resume runs/demo                   # continue where it stopped (same result)
  lugha train configs/default.yaml --out runs/ddp --nproc-per-node 4          # 4 GPUs (or CPU processes)
  lugha train configs/default.yaml --out runs/ddp --nproc-per-node 8 \\
      --nnodes 2 --rdzv-endpoint node0:29500       # the same command on both nodes

Many processes: --nproc-per-node N starts N workers through torchrun (DistributedDataParallel; NCCL on
GPUs, gloo on CPU); `torchrun --nproc-per-node N -m lugha.cli train CONFIG --out RUN` is the same run.
data.batch_size is the global batch: each process trains on its slice, and the contrastive loss sees all
of it, so N processes train like one with the same batch. Checkpoints (rank 0) resume on any N; after a
crash or kill -9 of any worker, `lugha train --resume RUN --nproc-per-node N` continues.

RUN gets config.yaml (resolved), model_config.json, metrics.jsonl, last/ (every epoch; with
loop.checkpoint_every also every N steps) and best/ (by loop.keep_best on the validation split).
A run stopped at any point (Ctrl-C, kill -9, power cut) resumes from its last checkpoint, mid-epoch
included; on CPU with a fixed seed the resumed run ends bitwise where an uninterrupted one would.
Frozen towers have their features computed once and cached (runtime.feature_cache), so projection-only
training runs at head speed even on a laptop CPU. Then: lugha eval RUN --split test.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=user_path, nargs="?", help="training config YAML (see configs/); omit with --resume RUN")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. optim.lr=1e-4 or 'data.languages=[en, sw]' (repeatable)")
    parser.add_argument("--out", type=user_path, metavar="RUN", help="run folder to create (or resume with --resume)")
    parser.add_argument("--resume", type=user_path, nargs="?", const=True, default=False, metavar="RUN",
                        help="continue the run in RUN (or in --out) from its last checkpoint")
    parser.add_argument("--nproc-per-node", type=int, metavar="N",
                        help="train in N processes on this node through torchrun (one per GPU; gloo on CPU)")
    parser.add_argument("--nnodes", type=int, default=1, metavar="M",
                        help="number of nodes (with --rdzv-endpoint; run the same command on each)")
    parser.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                        help="rendezvous of a multi-node run: the first node's address and a free port")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    from lugha.errors import ConfigError

    from lugha.reports import print_json

    run_dir = args.resume if isinstance(args.resume, str) else args.out
    if not run_dir:
        raise ConfigError("--out", "required: the run folder (or pass --resume RUN)")
    if args.config is None and not args.resume:
        raise ConfigError("config", "required: a training config YAML (e.g. configs/default.yaml)")

    if (args.nnodes != 1 or args.rdzv_endpoint) and not args.nproc_per_node:
        raise ConfigError("--nproc-per-node", "required with --nnodes/--rdzv-endpoint: processes per node")

    from lugha.training.train_config import load_train_config, resolve_paths

    # the config's own paths (data.manifest, cache_dir, init_from; --set ones too) against where the user stands
    cfg = resolve_paths(load_train_config(args.config, args.overrides)) if args.config else None
    if cfg is None and args.overrides:
        raise ConfigError("--set", "a resumed run keeps its saved config; --set needs the CONFIG it started from")
    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:  # the launcher (config checked); the workers train
        from lugha.training.distributed import launch

        launch(worker_argv(args), args.nproc_per_node, args.nnodes, args.rdzv_endpoint)
        return 0

    from lugha.training.trainer import train
    say = (lambda msg: None) if args.quiet or args.json else (lambda msg: print(msg, file=sys.stderr))
    result = train(cfg, run_dir, resume=bool(args.resume), show_progress=not (args.quiet or args.json), say=say)
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports for the job
    outcome = {"run": str(result.run_dir), "stopped": result.stopped, "steps": result.step, "epochs": result.epoch,
               "best": result.best, "epoch_seconds": [round(s, 2) for s in result.epoch_seconds],
               "val": result.last_eval["mean"] if result.last_eval else None}
    if args.json:
        print_json(outcome)
    else:
        best = "n/a" if result.best is None else f"{result.best:.4f}"
        print(f"{result.stopped}: {result.step} steps, best {best}; next: lugha eval {result.run_dir} --split test")
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    """This command's arguments for each torchrun worker (without the launcher's own flags)."""
    out = [str(args.config)] if args.config is not None else []
    for item in args.overrides:
        out += ["--set", item]
    if args.out:
        out += ["--out", str(args.out)]
    if args.resume:
        out += ["--resume"] + ([str(args.resume)] if isinstance(args.resume, str) else [])
    return out + [flag for flag, on in (("--quiet", args.quiet), ("--json", args.json)) if on]
