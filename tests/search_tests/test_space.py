"""The search space: expanded per layer from the real space configs, sampled into policies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from objectives.errors import ConfigError
from objectives.policy import Policy
from search.space import SearchSpace
from tests.conftest import compose_quick

LAYERS = ["conv1", "conv2", "fc1", "logits"]


def test_default_space_has_one_entry_per_layer(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path).space, LAYERS)
    assert [layer.name for layer in space.layers] == LAYERS
    assert all(layer.bits == (4, 8, 32) for layer in space.layers)
    assert set(space.to_dict()["layers"]) == set(LAYERS)


def test_sampled_policies_stay_inside_the_space_and_validate(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path).space, LAYERS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_bits = set()
    for _ in range(40):
        trial = study.ask()
        policy = space.sample(trial)
        policy.validate()
        assert set(policy.layers) == set(LAYERS)
        assert set(trial.params) == set(policy.flat_params())
        for layer in policy.layers.values():
            assert layer.bits in (4, 8, 32) and 0.0 <= layer.sparsity <= 0.9
            seen_bits.add(layer.bits)
        assert 1.0 <= policy.distill.temperature <= 8.0
        assert Policy.from_json(policy.to_json()) == policy
        study.tell(trial, 0.0)
    assert seen_bits == {4, 8, 32}


def test_bits_only_space_samples_no_sparsity(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path, "space=bits_only").space, LAYERS)
    trial = optuna.create_study().ask()
    policy = space.sample(trial)
    assert all(name.startswith("bits.") for name in trial.params)
    assert policy.sparse_layers == {}


def test_a_layer_override_applies_to_that_layer_only(tmp_path: Path) -> None:
    cfg = compose_quick(tmp_path, "+space.layers.logits={bits:[8]}")
    space = SearchSpace.from_config(cfg.space, LAYERS)
    trial = optuna.create_study().ask()
    policy = space.sample(trial)
    assert policy.layers["logits"].bits == 8 and "bits.logits" not in trial.params
    assert "bits.fc1" in trial.params


def test_an_override_for_a_missing_layer_is_an_error(tmp_path: Path) -> None:
    cfg = compose_quick(tmp_path, "+space.layers.conv7={bits:[8]}")
    with pytest.raises(ConfigError, match=r"space.layers names \['conv7'\], which the model does not have"):
        SearchSpace.from_config(cfg.space, LAYERS)
