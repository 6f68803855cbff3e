"""The PyTorch eager fp32 reference: the model a bundle was exported from, timed on the same inputs.

A bundle holds no torch weights, so this backend rebuilds the model from a training run (``RUN`` folder,
its ``best`` checkpoint) or, for timing only, from the bundle's own ModelConfig (``"config"``: pretrained
towers, untrained projections, so its outputs will not match the golden ones). Benchmarks use it for the
reference column; devices never need it.

torch and lugha.training are imported inside functions, only when ``backend="torch"`` is asked for:
``import lugha.runtimes`` must work where torch is absent (a test blocks it), and this module is the one
place in lugha.runtimes allowed to reach them (tests/test_packaging.py names it as the only exception).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.errors import BundleError
from lugha.manifest import BundleManifest, GraphSpec
from lugha.runtimes.backends import GraphSession, import_engine

CONFIG_REFERENCE = "config"


class TorchSession(GraphSession):
    backend = "torch"

    def __init__(self, spec: GraphSpec, fn: Callable, torch):
        super().__init__(spec)
        self._fn, self._torch = fn, torch

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._fn(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        return {self.output_names[0]: out.float().numpy()}


def _load_model(reference: str | os.PathLike, manifest: BundleManifest, vocab_size: int | None):
    if str(reference) == CONFIG_REFERENCE:
        from lugha.training.model import build_model

        model = build_model(manifest.model, vocab_size=vocab_size)
        return model.eval()
    run = Path(reference)
    if not run.is_dir():
        raise BundleError(f"--reference {run}: not a training run folder (or pass {CONFIG_REFERENCE!r} to time "
                          "the bundle's model config with untrained projections)")
    from lugha.training.checkpoint import load_run_model

    model, _tok, model_cfg, _train_cfg, folder = load_run_model(run)
    if model_cfg.name != manifest.model.name:
        raise BundleError(f"{folder}: the run trained {model_cfg.name!r} but the bundle holds "
                          f"{manifest.model.name!r}")
    # The exporter folds LoRA into the base weights; time the same plain modules, not peft's wrappers.
    from lugha.training.adapters import merge_adapters

    merge_adapters(model)
    return model.eval()


def open_reference(reference: str | os.PathLike, manifest: BundleManifest, threads: int | None = None,
                   vocab_size: int | None = None) -> dict[str, TorchSession]:
    """Graph sessions (image_encoder, text_encoder) over the eager model, with the I/O specs and golden
    samples of the bundle's fp32 graphs (ONNX preferred), so parity and timings compare like for like."""
    torch = import_engine("torch")
    # Threads are set after loading: random init of frozen test towers is not bitwise identical across
    # thread counts, and the run's frozen-weights digest check would refuse the rebuilt model.
    model = _load_model(reference, manifest, vocab_size)
    if threads:
        torch.set_num_threads(int(threads))
    fns = {"image_encoder": model.encode_image, "text_encoder": model.encode_text}
    sessions = {}
    for name, fn in fns.items():
        specs = sorted((g for g in manifest.graphs if g.name == name and g.precision == "fp32"),
                       key=lambda g: g.format != "onnx")
        if specs:
            sessions[name] = TorchSession(specs[0], fn, torch)
    if not sessions:
        raise BundleError("the torch reference needs the bundle's fp32 graphs (for their I/O specs); "
                          f"bundle has: {', '.join(g.key for g in manifest.graphs)}")
    return sessions


__all__ = ["TorchSession", "open_reference", "CONFIG_REFERENCE"]
