"""Policy: JSON round trip and range checks (table-driven; no TensorFlow)."""

from __future__ import annotations

from typing import Any

import pytest

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy


def _policy(**layer: Any) -> Policy:  # the table rows pass wrong values on purpose
    return Policy({"conv1": LayerPolicy(**layer)}, DistillPolicy(2.0, 0.5))


def test_json_round_trip_keeps_every_setting() -> None:
    policy = Policy({"conv1": LayerPolicy(bits=4, sparsity=0.5, clusters=16), "fc1": LayerPolicy(structure="2:4", width=0.5)},
                    DistillPolicy(3.5, 0.25))
    again = Policy.from_json(policy.to_json())
    assert again == policy
    assert again.quantized_layers == {"conv1": 4}
    assert again.sparse_layers == {"conv1": 0.5}
    assert again.structured_layers == ["fc1"] and again.widths == {"fc1": 0.5} and again.clustered_layers == {"conv1": 16}
    assert again.layers["fc1"].effective_sparsity == 0.5
    assert policy.flat_params()["bits.conv1"] == 4
    assert policy.flat_params()["distill.temperature"] == 3.5


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (lambda: _policy(bits=3), "bits of layer 'conv1' = 3"),
        (lambda: _policy(bits=16), "bits of layer 'conv1' = 16 (float16) needs method ptq or mixed"),
        (lambda: _policy(bits=2), "bits of layer 'conv1' = 2 (QAT stores 2-bit weights as INT4: 4-bit size, "
                                     "2-bit accuracy) needs method ptq"),
        (lambda: _policy(bits=12), "accepted bit widths: [2, 4, 8, 16, 32]"),
        (lambda: _policy(clusters=1), "clusters of layer 'conv1' = 1 is not accepted; accepted: 0 (no clustering) or an integer >= 2"),
        (lambda: _policy(structure="4:8"), "structure of layer 'conv1' = '4:8' is not supported"),
        (lambda: _policy(structure="2:4", sparsity=0.7), "conflicts with structure '2:4'"),
        (lambda: _policy(width=0.0), "width of layer 'conv1' = 0.0 is out of range"),
        (lambda: _policy(bits=8, act_bits=16), "act_bits of layer 'conv1' = 16 needs bits 8, ptq_mode 'static'"),
        (lambda: _policy(ptq_mode="magic"), "ptq_mode of layer 'conv1' = 'magic' is not supported"),
        (lambda: Policy({"conv1": LayerPolicy(sparsity=0.5)}, method="ptq"), "with method 'ptq', which does not train"),
        (lambda: Policy({}, method="distill"), "policy method = 'distill' is not supported; accepted: ['qat', 'ptq', 'mixed']"),
        (lambda: _policy(sparsity=1.0), "sparsity of layer 'conv1' = 1.0"),
        (lambda: _policy(sparsity=-0.1), "out of range"),
        (lambda: Policy({}, DistillPolicy(0.0, 0.5)), "distill temperature = 0.0 is not accepted; accepted: a positive"),
        (lambda: Policy({}, DistillPolicy(-1.0, 0.5)), "temperature = -1.0"),
        (lambda: Policy({}, DistillPolicy(1.0, 1.5)), "distill weight = 1.5"),
    ],
)
def test_out_of_range_settings_name_the_value(policy, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy().validate()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_policy_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\] in layer 'conv1'"):
        Policy.from_dict({"layers": {"conv1": {"bits": 8, "sparsity": 0.0, "clusters": 4, "colour": 1}}})
