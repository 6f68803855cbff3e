"""What an export starts from: a trained run (adapters merged) or a named untrained model, plus the data
it needs: real training images for calibration, the eval split for the accuracy gate and golden samples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lugha.config import ModelConfig
from lugha.errors import DataError
from lugha.preprocess import PreprocessSpec, preprocess_batch


@dataclass
class ExportSource:
    model: object  # LowClip, eval mode, adapters merged
    tokenizer: object  # lugha.training.text_tower.TorchTokenizer
    model_cfg: ModelConfig
    manifest: Path
    languages: tuple[str, ...]
    origin: str  # "run RUN/best" or "untrained NAME"
    trained: bool

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.model_cfg.preprocess

    @property
    def layout(self) -> str:
        return self.model_cfg.preprocess.layout


def load_run_source(run_dir: str | os.PathLike, checkpoint: str = "best") -> ExportSource:
    """A training run folder (the trainer's layout): model config + trained tensors, LoRA merged."""
    from lugha.training.adapters import merge_adapters
    from lugha.training.checkpoint import load_run_model

    model, tok, model_cfg, train_cfg, folder = load_run_model(run_dir, checkpoint)
    merge_adapters(model).eval()
    return ExportSource(model, tok, model_cfg, Path(train_cfg.data.manifest), tuple(train_cfg.data.languages),
                        f"run {folder}", True)


def untrained_source(model_name: str, manifest: str | os.PathLike, languages: Sequence[str] = (),
                     seed: int = 0) -> ExportSource:
    """A registry model with pretrained towers and untrained (random, seeded) projections: for size and
    quantization studies before any run exists. Accuracy numbers from it measure the towers, not a model."""
    from lugha.config import get_model_config
    from lugha.training.model import build_model, load_text_tokenizer

    cfg = get_model_config(model_name)
    tok = load_text_tokenizer(cfg)
    model = build_model(cfg, tok.vocab_size, seed=seed).eval()
    return ExportSource(model, tok, cfg, Path(manifest), tuple(languages), f"untrained {model_name}", False)


def eval_pairs(source: ExportSource, split: str):
    """The eval split (``test``, else ``val``) of the source's manifest and languages."""
    from lugha.training.data import PairSet

    tried = []
    for name in dict.fromkeys([split, "test", "val"]):
        try:
            return PairSet(source.manifest, name, source.languages), name
        except DataError as e:
            tried.append(str(e))
    raise DataError(f"no eval split in {source.manifest}: " + "; ".join(tried))


def limit_pairs(pairs, per_lang: int):
    """Keep at most ``per_lang`` rows per language (0 = all), renumbering images like PairSet does."""
    if per_lang <= 0:
        return pairs
    keep, seen = [], {}
    for i, r in enumerate(pairs.records):
        if seen.get(r.lang, 0) < per_lang:
            seen[r.lang] = seen.get(r.lang, 0) + 1
            keep.append(i)
    paths: dict[str, int] = {}
    pairs.records = [pairs.records[i] for i in keep]
    pairs.image_index = np.array([paths.setdefault(str(r.image_path(pairs.root)), len(paths)) for r in pairs.records])
    pairs.image_paths = list(paths)
    pairs.langs = np.array([r.lang for r in pairs.records])
    pairs.groups = [r.group_key for r in pairs.records]
    pairs.texts = [r.text for r in pairs.records]
    return pairs


def calibration_batches(source: ExportSource, n: int, batch_size: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct real training images (seeded choice), preprocessed as the device will."""
    from lugha.training.data import PairSet

    try:
        pairs = PairSet(source.manifest, "train", source.languages)
    except DataError:
        pairs = PairSet(source.manifest, "", source.languages)
    paths = list(pairs.image_paths)
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=min(n, len(paths)), replace=False))]
    if not chosen:
        raise DataError(f"{source.manifest}: no training images to calibrate int8 on")
    if len(chosen) >= batch_size:  # ORT's histogram collectors need equal batches: drop the ragged tail
        chosen = chosen[:len(chosen) - len(chosen) % batch_size]
    else:
        batch_size = len(chosen)
    pixels = preprocess_batch(chosen, source.preprocess)
    return [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]


def calibration_texts(source: ExportSource, n: int, batch_size: int = 32, seed: int = 0) -> list[tuple]:
    """``n`` distinct real training texts (seeded choice, every language of the run) as batches of
    ``(input_ids, attention_mask)``: what the per-token text int8 calibrates its smoothing and GPTQ on."""
    from lugha.training.data import PairSet

    try:
        pairs = PairSet(source.manifest, "train", source.languages)
    except DataError:
        pairs = PairSet(source.manifest, "", source.languages)
    texts = list(dict.fromkeys(pairs.texts))
    if not texts:
        raise DataError(f"{source.manifest}: no training texts to calibrate int8 on")
    rng = np.random.default_rng(seed)
    chosen = [texts[i] for i in sorted(rng.choice(len(texts), size=min(n, len(texts)), replace=False))]
    encode = token_encoder(source.tokenizer)
    return [encode(chosen[i:i + batch_size]) for i in range(0, len(chosen), batch_size)]


def token_encoder(tokenizer):
    """``texts -> (ids, mask)`` int64 numpy, padded to the longest text (what ONNX graphs take)."""
    inner = tokenizer.inner

    def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return inner.encode_batch(list(texts))

    return encode


__all__ = ["ExportSource", "load_run_source", "untrained_source", "eval_pairs", "limit_pairs",
           "calibration_batches", "calibration_texts", "token_encoder"]
