"""The search space: expanded per layer from the real space configs, sampled into policies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import Policy
from litesweep.search.space import SearchSpace
from tests.conftest import compose_quick

LAYERS = ["conv1", "conv2", "fc1", "logits"]


def test_default_space_has_one_entry_per_layer(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path).space, LAYERS)
    assert [unit.name for unit in space.units] == LAYERS == space.layer_names
    assert all(unit.bits == (4, 8, 32) for unit in space.units)
    assert set(space.to_dict()["units"]) == set(LAYERS)


def test_sampled_policies_stay_inside_the_space_and_validate(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path).space, LAYERS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_bits = set()
    for _ in range(40):
        trial = study.ask()
        policy = space.sample(trial)
        policy.validate()
        assert set(policy.layers) == set(LAYERS)
        flat = policy.flat_params()
        assert set(trial.params) <= set(flat)
        assert all(flat[k] == pytest.approx(v, abs=1e-6) for k, v in trial.params.items())
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


def test_ptq_space_samples_only_recipes_the_layer_accepts(tmp_path: Path) -> None:
    support = {"conv1": {"float", "fp16", "dynamic_w4", "dynamic_w8", "static_w8a8"},
               "conv2": {"float", "dynamic_w8"}, "fc1": {"float", "dynamic_w2", "dynamic_w8", "static_w8a16"},
               "logits": {"float", "weight_only_w4", "dynamic_w8"}}
    space = SearchSpace.from_config(compose_quick(tmp_path, "space=ptq").space, LAYERS, ptq_support=support)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen: set[str] = set()
    for _ in range(60):
        trial = study.ask()
        policy = space.sample(trial)
        policy.validate()
        assert policy.method == "ptq"
        for name in LAYERS:
            recipe = trial.params.get(f"recipe.{name}")
            assert recipe in support[name]
            seen.add(recipe)
        study.tell(trial, 0.0)
    assert {"fp16", "static_w8a16", "dynamic_w2", "weight_only_w4"} <= seen


def test_a_ptq_layer_with_no_accepted_recipe_is_an_error(tmp_path: Path) -> None:
    cfg = compose_quick(tmp_path, "space=ptq", "space.bits=[2]", "space.ptq_modes=[weight_only]")
    with pytest.raises(ConfigError, match=r"no post-training recipe of space \['weight_only_w2'\] fits 'conv1'"):
        SearchSpace.from_config(cfg.space, LAYERS, ptq_support={n: {"float", "dynamic_w2"} for n in LAYERS})


def test_layers_pruning_cannot_reach_sample_no_sparsity_nor_width(tmp_path: Path) -> None:
    space = SearchSpace.from_config(compose_quick(tmp_path, "space=full").space, LAYERS, unprunable=[LAYERS[0]],
                                    full_width=[LAYERS[0]])
    first, second = space.units[0], space.units[1]
    assert (first.sparsity.low, first.sparsity.high, first.structures) == (0.0, 0.0, ("unstructured",))
    assert (first.width.low, first.width.high) == (1.0, 1.0)
    assert second.sparsity.high > 0 and second.width.low < 1.0


def test_sensitivity_narrows_insensitive_low_sensitive_high_and_leaves_the_middle(tmp_path: Path) -> None:
    from litesweep.search.sensitivity import narrow

    space = SearchSpace.from_config(compose_quick(tmp_path, "space.sparsity.high=0.8").space, LAYERS)
    drops = {"conv1": 0.1, "conv2": 1.5, "fc1": 6.0, "logits": 3.0}
    narrowed = {u.name: u for u in narrow(space, drops, insensitive=0.5, sensitive=3.0).units}
    assert narrowed["conv1"].bits == (4,) and (narrowed["conv1"].sparsity.low, narrowed["conv1"].sparsity.high) == (0.8, 0.8)
    assert narrowed["conv2"].bits == (4, 8, 32) and narrowed["conv2"].sparsity.high == 0.8
    for sensitive in ("fc1", "logits"):  # 3.0 is on the boundary: counted sensitive
        assert narrowed[sensitive].bits == (8, 32) and narrowed[sensitive].sparsity.high == pytest.approx(0.4)


def test_sensitivity_seed_compresses_insensitive_units_most_and_keeps_the_rest_at_eight_bits(tmp_path: Path) -> None:
    from litesweep.search.sensitivity import seed_params

    space = SearchSpace.from_config(compose_quick(tmp_path).space, LAYERS)
    params = seed_params(space, {"conv1": 0.1, "conv2": 4.0, "fc1": 0.2, "logits": 9.0}, insensitive=0.5)
    assert {k: v for k, v in params.items() if k.startswith("bits.")} == {
        "bits.conv1": 4, "bits.conv2": 8, "bits.fc1": 4, "bits.logits": 8}
    assert params["sparsity.conv1"] == params["sparsity.fc1"] == space.units[0].sparsity.high
    assert params["sparsity.conv2"] == params["sparsity.logits"] == space.units[0].sparsity.low
