"""Policy: JSON round trip and range checks (table-driven; no TensorFlow)."""

from __future__ import annotations

import pytest

from objectives.errors import ConfigError
from objectives.policy import DistillPolicy, LayerPolicy, Policy


def _policy(**layer: object) -> Policy:
    return Policy({"conv1": LayerPolicy(**layer)}, DistillPolicy(2.0, 0.5))  # type: ignore[arg-type]


def test_json_round_trip_keeps_every_setting() -> None:
    policy = Policy({"conv1": LayerPolicy(4, 0.5), "fc1": LayerPolicy(32, 0.0)}, DistillPolicy(3.5, 0.25))
    again = Policy.from_json(policy.to_json())
    assert again == policy
    assert again.quantized_layers == {"conv1": 4}
    assert again.sparse_layers == {"conv1": 0.5}
    assert policy.flat_params()["bits.conv1"] == 4
    assert policy.flat_params()["distill.temperature"] == 3.5


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (lambda: _policy(bits=3), "bits of layer 'conv1' = 3"),
        (lambda: _policy(bits=16), "accepted bit widths: [2, 4, 8, 32]"),
        (lambda: _policy(sparsity=1.0), "sparsity of layer 'conv1' = 1.0"),
        (lambda: _policy(sparsity=-0.1), "out of range"),
        (lambda: Policy({}, DistillPolicy(0.0, 0.5)), "distill temperature = 0.0 must be a positive"),
        (lambda: Policy({}, DistillPolicy(-1.0, 0.5)), "temperature = -1.0"),
        (lambda: Policy({}, DistillPolicy(1.0, 1.5)), "distill weight = 1.5"),
    ],
)
def test_out_of_range_settings_name_the_value(policy, fragment: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as info:
        policy().validate()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_policy_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['clusters'\] in layer 'conv1'"):
        Policy.from_dict({"layers": {"conv1": {"bits": 8, "sparsity": 0.0, "clusters": 4}}})
