"""A run's metrics: ``metrics.jsonl`` always, TensorBoard events when ``tensorboard`` is importable."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from lugha.atomic import atomic_write_text


class RunLog:
    """Appends one JSON row per event. ``resume_step``: rows past the checkpoint being resumed are
    dropped (they will be written again), so a resumed run's file equals an uninterrupted run's."""

    def __init__(self, run_dir: Path, resume_step: int | None, say: Callable[[str], None]):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            rows = [r for r in self.path.read_text(encoding="utf-8").splitlines()
                    if r.strip() and _step(r) <= resume_step]
            atomic_write_text(self.path, "".join(r + "\n" for r in rows))  # a kill mid-rewrite keeps the old file
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)
        except ImportError:
            say("tensorboard is not installed: metrics go to metrics.jsonl only (pip install tensorboard)")

    def write(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a kill: dropped


class NullLog:
    """The log of a rank other than 0 under torchrun: rank 0 writes the one ``metrics.jsonl``."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass
