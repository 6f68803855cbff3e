"""Training on many processes: torchrun's environment, DistributedDataParallel, the global-batch loss.

(Filled in by the distributed half of issue #18.)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size`` (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def no_sync(self, task, skip: bool):
        """DDP's ``no_sync`` on a micro-batch that is not the last of an optimizer step."""
        ddp = getattr(task, "ddp", None)
        return ddp.no_sync() if skip and ddp is not None else contextlib.nullcontext()
