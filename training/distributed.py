"""Training on many processes: torchrun's environment, DistributedDataParallel, the global-batch loss.

``lugha train CONFIG --nproc-per-node N`` re-runs itself through PyTorch's own launcher
(``torch.distributed.run``, i.e. torchrun); each worker finds its rank in the environment torchrun sets
(:func:`init`). The run is the same run whatever the number of processes:

* ``data.batch_size`` is the global batch. An epoch's batches are a pure function of (seed, epoch)
  (:func:`lugha.training.data.epoch_batches`); rank r of W takes the r-th contiguous slice of each
  (:func:`rank_batches`) and reads only those rows. Resuming at batch k replays the same slices, and a
  checkpoint resumes on any number of ranks (``tests/test_distributed.py``: written by 2, resumed by 1).
* The contrastive loss sees the global batch: each rank's embeddings are gathered with their gradients
  (:func:`gather_with_grad`, open_clip's idea), so every rank computes the loss of all W slices together;
  DistributedDataParallel averages the W identical-loss gradients into that loss's gradient. N ranks of
  B/N rows train like one process with B rows (fp32 on CPU: the same losses to ~1e-6).
* Rank 0 validates (the report is broadcast, so best and patience agree everywhere) and writes the log and
  the checkpoints; they hold the unwrapped model's trainable tensors, loadable by any world size, and every
  rank's RNG state, so a resume on the same number of ranks draws the same dropout masks (exact on CPU).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

from lugha.errors import ConfigError, LughaError


class WorkerFailed(LughaError):
    """A torchrun worker exited with an error (or was killed); the run resumes from its last checkpoint."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size`` (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def no_sync(self, task, skip: bool):
        """DDP's ``no_sync`` on a micro-batch that is not the last of an optimizer step (the gradients
        accumulate locally; the last micro-batch's backward all-reduces their sum once)."""
        ddp = getattr(task, "ddp", None)
        return ddp.no_sync() if skip and ddp is not None else contextlib.nullcontext()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable value; one process: ``obj``)."""
        if not self.active:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank (one process: ``[obj]``)."""
        if not self.active:
            return [obj]
        import torch.distributed as td

        out: list = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            td.barrier()


def from_env(env: dict | None = None) -> Dist:
    """The rank torchrun gave this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); 0 of 1 without."""
    env = os.environ if env is None else env
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(device_name: str = "auto") -> tuple[Dist, Any]:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPU) and pick this rank's device:
    ``cuda:LOCAL_RANK`` on a GPU node. One process: no group, the usual device."""
    import torch

    from lugha.training.optim import pick_device

    dist = from_env()
    device = pick_device(device_name)
    if not dist.active:
        return dist, device
    import torch.distributed as td

    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist, device


def close(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) of each rank in a global batch of ``n`` rows (sizes differ by at most 1:
    an epoch's tail batch need not divide by the number of ranks)."""
    base, extra = divmod(n, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def rank_batches(batches: Sequence[Sequence[int]], dist: Dist) -> list[list[int]]:
    """The distributed sampler: rank r's slice of each global batch, in order. ``batches`` is the epoch's
    seeded order from the position being resumed, so every rank reads only its rows and any step resumes."""
    out = []
    for b in batches:
        start, stop = shard_bounds(len(b), dist.world_size)[dist.rank]
        out.append(list(b[start:stop]))
    return out


def check_batch(batch_size: int, dist: Dist) -> None:
    """Each rank needs rows in every batch, the tail batch (at least half a batch) included."""
    if dist.active and batch_size < 2 * dist.world_size:
        raise ConfigError("data.batch_size", f"{batch_size} is the global batch; {dist.world_size} processes need "
                                             f"at least {2 * dist.world_size} (2 per process)")


def gather_with_grad(x, dist: Dist, sizes: Sequence[int] | None = None):
    """Every rank's rows of ``x`` concatenated in rank order, differentiable: each rank's loss sends its
    gradient back to the rows it came from (open_clip's ``gather_with_grad``). ``sizes``: each rank's row
    count when they differ (padded for the collective, then cut back)."""
    if not dist.active:
        return x
    import torch

    sizes = list(sizes) if sizes is not None else [x.shape[0]] * dist.world_size
    width = max(sizes)
    padded = x if x.shape[0] == width else torch.cat([x, x.new_zeros(width - x.shape[0], *x.shape[1:])])
    parts = _all_gather_fn().apply(padded.contiguous(), dist.rank, dist.world_size)
    return torch.cat([parts[r, :n] for r, n in enumerate(sizes)])


def _all_gather_fn():
    """all_gather forward; backward sums every rank's gradient of the gathered tensor (all_reduce) and
    keeps this rank's block: the loss is computed on every rank, and each copy's gradient reaches the
    rows' owner. (torch.distributed.nn's gather does the same; its gloo path is deprecated.)"""
    import torch
    import torch.distributed as td

    class AllGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, rank: int, world: int):
            ctx.rank = rank
            out = x.new_empty(world, *x.shape)
            td.all_gather(list(out.unbind(0)), x)
            return out

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous()
            td.all_reduce(grad)
            return grad[ctx.rank], None, None

    return AllGather


def global_batch_loss(model, embed, autocast, dist: Dist):
    """The training step as a module: ``forward(pixels, rows, sizes)`` embeds this rank's rows with
    ``embed``, gathers every rank's embeddings (:func:`gather_with_grad`) and returns ``model.loss`` of the
    global batch. A module because DistributedDataParallel syncs gradients for what its forward returns;
    with one process the gather is the identity and this is the plain step."""
    import torch

    class GlobalBatchLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # registered: DDP finds the trainable parameters here

        def forward(self, pixels, rows, sizes):
            with autocast():
                img, txt = embed(pixels, rows)
                return self.model.loss(gather_with_grad(img, dist, sizes), gather_with_grad(txt, dist, sizes))

    return GlobalBatchLoss()


def wrap_ddp(module, dist: Dist, device):
    """``module`` under DistributedDataParallel (the trainable parameters only; frozen towers are skipped)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def launch_args(train_argv: Sequence[str], nproc_per_node: int, nnodes: int = 1,
                rdzv_endpoint: str | None = None) -> list[str]:
    """torchrun's arguments for ``python -m lugha.cli train ...`` on this node. One node without an
    endpoint: ``--standalone`` (a free local port). Several nodes: c10d rendezvous at ``HOST:PORT``, the
    same command on every node (torchrun numbers the nodes)."""
    if nproc_per_node < 1 or nnodes < 1:
        raise ConfigError("--nproc-per-node", f"needs >= 1 process on >= 1 node, got {nproc_per_node} x {nnodes}")
    args = ["--nproc-per-node", str(nproc_per_node), "--nnodes", str(nnodes)]
    if rdzv_endpoint:
        args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
    elif nnodes > 1:
        raise ConfigError("--rdzv-endpoint", f"{nnodes} nodes need a rendezvous HOST:PORT (the first node's)")
    else:
        args += ["--standalone"]
    return args + ["-m", "lugha.cli", "train", *train_argv]


def launch(train_argv: Sequence[str], nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None) -> None:
    """Run ``lugha train`` in ``nproc_per_node`` workers on this node through torchrun (this process
    becomes torchrun's agent); :class:`WorkerFailed` when one fails."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(launch_args(train_argv, nproc_per_node, nnodes, rdzv_endpoint))
    except ChildFailedError as e:
        failures = "; ".join(f"rank {r}: exit {f.exitcode}" for r, f in sorted(e.failures.items()))
        raise WorkerFailed(f"{failures}; `lugha train --resume RUN --nproc-per-node {nproc_per_node}` continues "
                           "from the last checkpoint") from None
