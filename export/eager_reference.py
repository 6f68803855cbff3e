"""The PyTorch eager fp32 reference: the model a bundle was exported from, timed on the same inputs.

A bundle holds no torch weights, so this rebuilds the model from a training run (``RUN`` folder, its
``best`` checkpoint) or, for timing only, from the bundle's own ModelConfig (``"config"``: pretrained
towers, untrained projections, so its outputs will not match the golden ones). Benchmarks use it for the
reference column; devices never need it.

lugha.runtimes never imports torch or training: it takes this reference as a
:class:`lugha.runtimes.backends.Reference` (``open_bundle(..., reference=reference_for(RUN))``), and a
benchmark's worker process rebuilds it from ``REFERENCE_FACTORY`` (a callable cannot cross a process).
torch and lugha.training are imported only when the sessions are opened.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.errors import BundleError, MissingDependencyError
from lugha.manifest import BundleManifest, GraphSpec
from lugha.runtimes.backends import REFERENCE_BACKEND, GraphSession, Reference

CONFIG_REFERENCE = "config"
# What bench's worker imports to rebuild the reference (lugha.runtimes.backends.load_reference).
REFERENCE_FACTORY = f"{__name__}:reference_for"
INSTALL = "pip install lugha[train]"


class TorchSession(GraphSession):
    backend = REFERENCE_BACKEND

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


def _import_torch():
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        why = f"{type(e).__name__}: {e}"
        raise MissingDependencyError(f"the PyTorch reference needs torch ({why}): {INSTALL}") from None
    return torch


def open_reference(reference: str | os.PathLike, manifest: BundleManifest, threads: int | None = None,
                   vocab_size: int | None = None) -> dict[str, TorchSession]:
    """Graph sessions (image_encoder, text_encoder) over the eager model, with the I/O specs and golden
    samples of the bundle's fp32 graphs (ONNX preferred), so parity and timings compare like for like."""
    torch = _import_torch()
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


def _missing_torch() -> str:
    """Why torch cannot be used here ("" when it can), found without importing it: a benchmark's parent
    process would pass torch's hundreds of MB on to every worker it starts."""
    try:
        found = importlib.util.find_spec("torch") is not None  # None too when sys.modules blocks it
    except (ImportError, ValueError) as e:
        return f"backend {REFERENCE_BACKEND!r} needs torch ({type(e).__name__}: {e}): {INSTALL}"
    return "" if found else f"backend {REFERENCE_BACKEND!r} needs torch (No module named 'torch'): {INSTALL}"


def reference_for(source: str | os.PathLike) -> Reference:
    """The PyTorch reference of a training run folder (or ``"config"``) for ``open_bundle`` and bench."""
    def open_sessions(root: Path, manifest: BundleManifest, threads: int | None) -> dict[str, GraphSession]:
        vocab = None
        if manifest.tokenizer is not None:
            from lugha.tokenizer import load_tokenizer

            vocab = load_tokenizer(root / manifest.tokenizer.file, manifest.tokenizer).vocab_size
        return dict(open_reference(source, manifest, threads, vocab))

    return Reference(str(source), open_sessions, factory=REFERENCE_FACTORY,
                     golden_verdict=str(source) != CONFIG_REFERENCE, missing=_missing_torch())


__all__ = ["TorchSession", "open_reference", "reference_for", "CONFIG_REFERENCE", "REFERENCE_FACTORY"]
