"""The model config registry: names, derived test twins, JSON round trip, typed errors naming fields."""
from __future__ import annotations

import json

import pytest

from lugha.config import ModelConfig, get_model_config, list_models, register_model
from lugha.errors import ConfigError, UnknownModelError

REAL_TO_TWIN = {"lowclip-lite0-e5small": "test-tiny", "lowclip-b0-mdistilbert": "test-tiny-b0"}


def test_registry_lists_real_configs_and_their_test_twins():
    names = list_models()
    for name in [*REAL_TO_TWIN, *REAL_TO_TWIN.values()]:
        assert name in names
    assert names == sorted(names)
    assert set(list_models("test-*")) >= set(REAL_TO_TWIN.values())
    assert not any(n.startswith("test-") for n in list_models("lowclip-*"))


@pytest.mark.parametrize("real,twin", sorted(REAL_TO_TWIN.items()))
def test_twin_is_derived_same_structure_smaller_sizes(real, twin):
    r, t = get_model_config(real), get_model_config(twin)
    assert t.name == twin and real in t.description
    # Same code paths: architecture, pooling, loss, adapter kind, preprocessing policy.
    assert t.image_tower.arch == r.image_tower.arch
    assert t.text_tower.name_or_path == r.text_tower.name_or_path
    assert t.text_tower.pooling == r.text_tower.pooling
    assert t.text_tower.prefix == r.text_tower.prefix
    assert t.loss == r.loss
    assert t.adapter.kind == r.adapter.kind and t.adapter.text_targets == r.adapter.text_targets
    for f in ("resize", "interpolation", "mean", "std", "crop_pct", "layout", "dtype"):
        assert getattr(t.preprocess, f) == getattr(r.preprocess, f), f
    # Toy sizes and random init, so the whole suite runs on CPU without weights.
    assert t.image_tower.weights is None and r.image_tower.weights is not None
    assert t.image_tower.width_mult < r.image_tower.width_mult
    assert t.text_tower.tiny and r.text_tower.tiny is None
    assert t.text_tower.hidden_size < r.text_tower.hidden_size
    assert t.text_tower.max_length < r.text_tower.max_length
    assert t.embed_dim < r.embed_dim
    assert t.preprocess.size < r.preprocess.size
    assert t.adapter.r < r.adapter.r


@pytest.mark.parametrize("name", list_models())
def test_to_dict_from_dict_round_trip_through_json(name):
    cfg = get_model_config(name)
    data = json.loads(json.dumps(cfg.to_dict()))
    back = ModelConfig.from_dict(data)
    assert back == cfg
    assert isinstance(back.preprocess.mean, tuple) and isinstance(back.adapter.text_targets, tuple)


def _data(**changes) -> dict:
    data = get_model_config("test-tiny").to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


@pytest.mark.parametrize("change,field,words", [
    ({"text_tower__max_length": "64"}, "model.text_tower.max_length", "expected int"),
    ({"text_tower__max_length": 2}, "model.text_tower.max_length", ">= 4"),
    ({"text_tower__pooling": "max"}, "model.text_tower.pooling", "'mean'"),
    ({"preprocess__size": 4}, "model.preprocess.size", ">= 8"),
    ({"preprocess__mean": [0.5, 0.5]}, "model.preprocess.mean", "3 items"),
    ({"embed_dim": 0}, "model.embed_dim", "positive"),
    ({"embed_dim": True}, "model.embed_dim", "expected int"),
    ({"init_logit_scale": "hot"}, "model.init_logit_scale", "number"),
    ({"adapter__kind": "dora"}, "model.adapter.kind", "lora"),
])
def test_bad_values_raise_config_error_naming_the_field_path(change, field, words):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(_data(**change))
    assert info.value.field == field
    assert str(info.value).startswith(field + ":") and words in str(info.value)


def test_unknown_and_missing_fields_are_named():
    data = _data()
    data["text_tower"]["hidden"] = 3
    with pytest.raises(ConfigError, match=r"model\.text_tower: unknown field\(s\) \['hidden'\]"):
        ModelConfig.from_dict(data)
    data = _data()
    del data["name"]
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(data)
    assert info.value.field == "model.name"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as info:
        get_model_config("lowclip-nope")
    message = str(info.value)
    assert "lowclip-nope" in message
    for name in list_models():
        assert name in message


def test_registering_a_name_twice_is_refused():
    before = list_models()
    with pytest.raises(ConfigError, match="registered twice"):
        register_model(lambda: ModelConfig(name="test-tiny"))
    assert list_models() == before
