"""litesweep-pick's parts, without a sweep: the selection rule over front trials and presets (``search.pick``), and
the overrides that rebuild a recorded config from litesweep's defaults (``search.reproduce``, on the real ``conf/``)."""

from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf

from litesweep.search.pareto import compare
from litesweep.search.pick import Candidate, NothingMeetsConstraints, select, selection_figures
from litesweep.search.reproduce import SKIPPED, format_value, reproduce_overrides
from tests.conftest import CONF_DIR


def _compose(*overrides: str) -> Any:
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs

    register_configs()
    return compose_config(list(overrides), CONF_DIR)


def _record(*overrides: str) -> Any:
    """What a sweep logs as config.yaml: the resolved config, as YAML, read back."""
    return OmegaConf.create(OmegaConf.to_yaml(_compose(*overrides), resolve=True))


def _kept(cfg: Any) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return {str(k): v for k, v in resolved.items() if k not in SKIPPED}


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), []),
    (("data=digits",), ["data=digits"]),
    (("data=digits", "data.seed=3"), ["data=digits", "data.seed=3"]),
    (("space=ptq", "space.bits=[8,32]"), ["space=ptq", "space.bits=[8,32]"]),
    (("finetune.max_train_samples=600", "finetune.qat_epochs=2"), ["finetune.qat_epochs=2", "finetune.max_train_samples=600"]),
    (("+space.layers.logits={bits:[8,32]}",), None),
    (("paths.output_dir=/tmp/a b", "paths.cache_dir=/tmp/cache"), ["paths.output_dir=/tmp/a b", "paths.cache_dir=/tmp/cache"]),
    (("study.n_trials=3", "pick.prefer=smallest", "progress=false"), []),  # the command's own nodes are left out
])
def test_overrides_rebuild_the_recorded_config(overrides: tuple[str, ...], expected: list[str] | None) -> None:
    found = reproduce_overrides(_record(*overrides))
    if expected is not None:
        assert found == expected
    assert _kept(_compose(*found)) == _kept(_record(*overrides))


def test_a_path_interpolated_from_another_needs_no_override_of_its_own() -> None:
    """paths.store_dir and the tracking URI follow paths.output_dir: only the latter is written."""
    found = reproduce_overrides(_record("paths.output_dir=/srv/runs"))
    assert found == ["paths.output_dir=/srv/runs"]


def test_a_password_in_the_record_is_masked() -> None:
    found = reproduce_overrides(_record("tracking.uri=postgresql://user:hunter2@db/mlflow"))
    assert found == ["tracking.uri=postgresql://user:***@db/mlflow"]


def test_keys_of_another_litesweep_version_are_left_out() -> None:
    """A record with a key today's schema lacks, and without one it has, still gives overrides that compose."""
    record = _record("data=digits")
    record.data.retired_setting = 7
    del record.finetune.max_train_samples
    found = reproduce_overrides(record)
    assert found == ["data=digits"]
    _compose(*found)


def test_it_composes_inside_a_running_hydra_app_and_leaves_it_as_it_was() -> None:
    """litesweep-pick runs it under @hydra.main, whose global Hydra is already initialised."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    record = _record("model=tiny_cnn", "latency.max_runs=60")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        running = GlobalHydra.instance().hydra
        assert reproduce_overrides(record) == ["model=tiny_cnn", "latency.max_runs=60"]
        assert GlobalHydra.instance().hydra is running
        assert compose("config", overrides=["data=digits"]).data.name == "digits"


@pytest.mark.parametrize(("value", "text"), [
    (None, "null"), (True, "true"), (False, "false"), (3, "3"), (0.0005, "0.0005"), (1e-05, "1e-05"),
    ([8, 32], "[8,32]"), (["unstructured", "2:4"], "[unstructured,2:4]"), ({"low": 0.0, "high": 0.9}, "{low:0.0,high:0.9}"),
    ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"), ("1", "'1'"), ("true", "'true'"), ("null", "'null'"),
    ("it's", "'it\\'s'"), ("a,b", "'a,b'"), ("conv.*", "conv.*"), ("", "''"),
    ("a,b\\c", "'a,b\\c'"), ("a,b\\", "'a,b\\\\'"),  # a backslash is doubled only before the closing quote
])
def test_values_are_written_in_hydras_override_syntax(value: Any, text: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert format_value(value) == text
    parsed = OverridesParser.create().parse_override(f"k={text}").value()
    assert parsed == value and type(parsed) is type(value)


DIRECTIONS = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _c(label: str, accuracy: float, size: int, latency: float | tuple[float, float, float]) -> Candidate:
    """A candidate from a table row: latency a single reading, or (confirmed median, low, high)."""
    metrics = {"accuracy": accuracy, "accuracy_drop": 0.0, "size_bytes": float(size), "latency_ms": 9.9}
    if isinstance(latency, tuple):
        metrics |= dict(zip(("latency_ms_confirmed", "latency_ms_low", "latency_ms_high"), latency, strict=True))
    else:
        metrics["latency_ms"] = latency
    kind, name = label.split(":")
    return Candidate(f"run-{name}", metrics, trial=int(name) if kind == "trial" else None, preset=name if kind == "preset" else None)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ((1.0, 0.9, 1.1), (1.5, 1.2, 1.8), 1),  # ranges apart: faster
    ((1.5, 1.2, 1.8), (1.0, 0.9, 1.1), -1),
    ((1.0, 0.9, 1.3), (1.5, 1.2, 1.8), 0),  # ranges overlap: a tie, whatever the medians
    (1.0, (1.5, 1.2, 1.8), 1),  # a run never re-timed: its one reading is its range
    (1.25, (1.5, 1.2, 1.8), 0),
])
def test_one_model_is_faster_only_when_the_latency_ranges_do_not_overlap(a, b, expected) -> None:
    assert compare(_c("trial:1", 0.9, 1, a).figures, _c("trial:2", 0.9, 1, b).figures, "latency_ms", "minimize") == expected


def test_selection_uses_the_confirmed_latency_and_never_test_figures() -> None:
    metrics = {"accuracy": 0.9, "test_accuracy": 0.99, "latency_ms": 0.5, "latency_ms_confirmed": 2.0}
    assert selection_figures(metrics)["latency_ms"] == 2.0 and selection_figures(metrics)["accuracy"] == 0.9
    slow = Candidate("run", {**metrics, "size_bytes": 10.0, "accuracy_drop": 0.0}, preset="float16")
    with pytest.raises(NothingMeetsConstraints, match="closest presets: preset float16"):
        select([], [slow], {"max_latency_ms": ("latency_ms", "<=", 1.0)}, "fastest", DIRECTIONS)


@pytest.mark.parametrize(("trials", "presets", "prefer", "picked", "reason"), [
    # a preset that wins under the preference is picked, and says so
    ([_c("trial:1", 0.95, 20_000, 1.0)], [_c("preset:dynamic_int8", 0.94, 10_000, 1.0)], "smallest", "preset dynamic_int8",
     "wins under prefer smallest"),
    ([_c("trial:1", 0.95, 20_000, 1.0)], [_c("preset:dynamic_int8", 0.94, 10_000, 1.0)], "most_accurate", "trial 1", None),
    # fastest: trials 1 and 2 tie on latency (overlapping ranges), 2 is more accurate; the preset ties 2 on latency and
    # beats it on accuracy and size, so it dominates fastest's choice and is picked instead
    ([_c("trial:1", 0.90, 20_000, (1.00, 0.95, 1.05)), _c("trial:2", 0.92, 20_000, (1.10, 1.04, 1.30))],
     [_c("preset:float16", 0.93, 15_000, (1.08, 1.06, 1.10))], "fastest", "preset float16", "dominates trial 2"),
    # the lowest latency wins when no range overlaps it
    ([_c("trial:1", 0.90, 20_000, (1.00, 0.95, 1.05)), _c("trial:2", 0.99, 9_000, (1.20, 1.10, 1.30))], [], "fastest",
     "trial 1", None),
])
def test_select_takes_presets_beside_the_front(trials, presets, prefer, picked, reason) -> None:
    choice = select(trials, presets, {}, prefer, DIRECTIONS)
    assert choice.candidate.label == picked
    assert (choice.reason is None) if reason is None else (reason in (choice.reason or ""))


def test_an_explicit_trial_is_kept_even_when_a_preset_dominates_it() -> None:
    trial, preset = _c("trial:4", 0.90, 20_000, 1.0), _c("preset:dynamic_int8", 0.95, 10_000, 0.5)
    assert select([trial], [preset], {}, "knee", DIRECTIONS).candidate is preset
    choice = select([trial], [preset], {}, "knee", DIRECTIONS, trial=4)
    assert choice.candidate is trial and choice.best_preset is preset
