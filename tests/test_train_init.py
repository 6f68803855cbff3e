"""Retention levers of an all-language run: language weights in the epoch order, and ``init_from`` (start
from a baseline run's trained tensors)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lugha.errors import ConfigError
from lugha.training.data import epoch_order
from lugha.training.train_config import DataConfig

torch = pytest.importorskip("torch")


def test_language_weights_scale_each_languages_share_of_the_epoch():
    langs = np.array(["en"] * 100 + ["sw"] * 300 + ["yo"] * 600)
    plain = epoch_order(langs, seed=1, epoch=0, balance_languages=False)
    assert np.array_equal(plain, epoch_order(langs, 1, 0, False, {"en": 1.0}))  # weight 1 changes nothing
    order = epoch_order(langs, seed=1, epoch=0, balance_languages=False, language_weights={"en": 4})
    got = Counter(langs[order].tolist())
    assert len(order) == len(langs) and sum(got.values()) == 1000
    # shares 100*4 : 300 : 600 of 1,000 slots -> 307.7 / 230.8 / 461.5
    assert (got["en"], got["sw"], got["yo"]) == (308, 231, 461)
    assert len(set(order[langs[order] == "en"].tolist())) == 100  # every English row, some twice
    balanced = Counter(langs[epoch_order(langs, 1, 0, True, {"yo": 2})].tolist())
    assert (balanced["en"], balanced["sw"], balanced["yo"]) == (250, 250, 500)
    again = epoch_order(langs, seed=1, epoch=0, balance_languages=False, language_weights={"en": 4})
    assert np.array_equal(order, again)  # a pure function of (seed, epoch): resumes replay it


def test_language_weights_must_be_positive():
    with pytest.raises(ConfigError, match="language_weights"):
        DataConfig(language_weights={"en": 0})


@pytest.mark.slow
def test_init_from_starts_a_lora_run_from_a_projection_runs_heads(demo_small, tmp_path):
    from test_trainer import tiny, weights

    from lugha.training.checkpoint import build_for_training, init_trainable_from
    from lugha.training.trainer import train

    base = tiny(demo_small, tmp_path / "cache", "loop.epochs=2", "model_overrides.adapter.kind=projection")
    train(base, tmp_path / "base", show_progress=False, say=lambda m: None)
    lora = tiny(demo_small, tmp_path / "cache", "model_overrides.adapter.kind=lora")
    model, _ = build_for_training(lora, lora.model_config())
    msg = init_trainable_from(model, tmp_path / "base", lora.model_config())
    taken = weights(tmp_path / "base", "best")
    own = dict(model.named_parameters())
    assert all(torch.equal(own[n], t) for n, t in taken.items() if n in own)
    assert "image_proj" in msg and "start fresh" in msg  # the LoRA tensors are new, and it says so
    other = tiny(demo_small, tmp_path / "cache", "model=test-tiny-b0")
    m2, _ = build_for_training(other, other.model_config())
    with pytest.raises(ConfigError, match="image_tower differs"):
        init_trainable_from(m2, tmp_path / "base", other.model_config())
