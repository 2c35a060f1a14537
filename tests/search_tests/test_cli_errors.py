"""Bad command lines: one-line error naming the value, exit code 2, nothing written to the stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    ("study.foo=1", "unknown config key 'study.foo'"),
    ("space.bits=[3,8]", "space.bits entry = 3 is not supported; accepted bit widths: [2, 4, 8, 16, 32]"),
    ("space.bits=[4,16]", "space.bits entry = 16"),
    ("space.sparsity.high=1.0", "space.sparsity.high = 1.0 is out of range"),
    ("space.sparsity.high=1.5", "space.sparsity.high = 1.5"),
    ("space.distill.temperature.low=0", "space.distill.temperature.low = 0.0 is not accepted; accepted: a positive number"),
    ("space.distill.temperature.low=-2", "space.distill.temperature.low = -2.0"),
    ("study.sampler=cmaes", "study.sampler = 'cmaes' is not supported; accepted: ['tpe', 'nsgaii', 'random', 'gp']"),
    ("study.n_startup_trials=0", "study.n_startup_trials = 0 is not accepted; accepted: an integer >= 1, or null"),
    ("study.n_trials=abc", "bad value for config key 'study.n_trials'"),
    ("study.presets=maybe", "bad value for config key 'study.presets'"),
    ("study.n_trials=0", "study.n_trials = 0 is not accepted; accepted: an integer >= 1"),
    ("study.isolation=thread", "study.isolation = 'thread' is not supported; accepted: ['process', 'none']"),
    ("study.trial_timeout_s=0", "study.trial_timeout_s = 0.0 is not accepted; accepted: a number > 0, or null"),
    ("study.trial_max_memory_mb=-1", "study.trial_max_memory_mb = -1.0 is not accepted; accepted: a number > 0, or null"),
    ("study.isolation=none study.trial_timeout_s=60", "study.trial_timeout_s = 60.0 needs study.isolation = 'process'"),
    ("study.isolation=none study.inject_failures=0.5 study.inject_at=[abort]", "would kill the worker with study.isolation = 'none'"),
    ("space=nope", "config group option 'space/nope' not found; accepted: bits_only, default, full, mixed, prune_only, ptq"),
    ("study.objectives=[accuracy,speed]", "study.objectives entry = 'speed' is not supported"),
    ("study.directions=[maximize,up,minimize]", "study.directions entry = 'up' is not supported"),
    ("study.directions=[maximize]", "study.objectives has 3 entries but study.directions has 1"),
    ("finetune.qat_epochs=0", "finetune.qat_epochs = 0 is not accepted; accepted: an integer >= 1"),
    ("data.source=imagenet", "data.source = 'imagenet' is not supported"),
    ("space.techniques=[quantize,magic]",
     "space.techniques entry = 'magic' is not supported; accepted: ['quantize', 'prune', 'cluster', 'distill', 'width']"),
    ("space.clusters=[0,1]", "space.clusters entry = 1 is not accepted; accepted: 0 (no clustering) or an integer >= 2"),
    ("study.constraints={speed_ms:3}", "study.constraints key = 'speed_ms' is not supported"),
    ("study.constraints={size_bytes:small}", "study.constraints.size_bytes = 'small' is not accepted; accepted: a number"),
    ("space.structures=[2:8]", "space.structures entry = '2:8' is not supported; accepted: ['unstructured', '2:4']"),
    ("space.bits=[8,16]", "space.bits entry = 16 (float16) needs space.method ptq or mixed"),
    ("space.bits=[2,8]", "space.bits entry = 2 (QAT stores 2-bit weights as INT4: 4-bit size, 2-bit accuracy) needs space.method ptq "
     "or mixed; accepted with qat: [4, 8, 32]"),
    ("space.groups={convs:'conv[1'}", "space.groups.convs = 'conv[1' is not a valid regular expression"),
    ("space=ptq space.techniques=[quantize,prune]", "space.techniques entry = 'prune' needs training"),
    ("space.width={low:0.0,high:1.0}", "space.width.low = 0.0 is out of range"),
    ("latency.backend=device", "latency.backend = 'device' is not supported; accepted: ['local', 'command']"),
    ("latency.backend=command",
     "latency.backend = 'command' needs latency.command and latency.pattern; accepted: a shell command with {model}"),
    ("objective.metric=f1",
     "objective.metric = 'f1' is not supported; accepted: one of ['accuracy', 'top_k', 'agreement'] or {_target_: module.function}"),
    ("objective=top_k objective.k=0", "objective.k = 0 is not accepted; accepted: an integer >= 1"),
    ("objective=recall", "config group option 'objective/recall' not found; accepted: accuracy, agreement, top_k"),
    ("objective.metric={_target_:no_such_module.f1}",
     "objective.metric._target_ = 'no_such_module.f1' cannot be imported (no module 'no_such_module'"),
    ("objective.metric={_target_:math.no_such_function}",
     "objective.metric._target_ = 'math.no_such_function': module 'math' has no 'no_such_function'"),
    ("objective.metric={_target_:math.pi}", "objective.metric._target_ = 'math.pi' is not callable"),
    ("objective.metric={_target_:statistics.fmean,beta:2}",
     "objective.metric._target_ = 'statistics.fmean' cannot be called as f(labels, outputs, beta=...)"),
]

@pytest.mark.parametrize(("override", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_override_fails_in_one_line_and_writes_nothing(override: str, message: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "litesweep.search", *override.split(" "), f"paths.output_dir={out}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("litesweep: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert "accepted" in lines[0], lines[0]
    assert not out.exists(), "a rejected command line must not create the output directory or stores"


def test_console_script_composes_the_config(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "litesweep"
    proc = subprocess.run([str(script), "--cfg", "job", "study.n_trials=20", "study.sampler=nsgaii", "space=bits_only",
                           f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "n_trials: 20" in proc.stdout and "sampler: nsgaii" in proc.stdout and "name: bits_only" in proc.stdout


def test_a_group_pattern_matching_no_layer_fails_before_training(tmp_path: Path) -> None:
    """Layer names come from the untrained model: the error comes before the base model trains or a store opens."""
    from tests.conftest import QUICK_OVERRIDES

    out = tmp_path / "out"
    cache = tmp_path / "cache"  # its own cache: the shared one may already hold the model
    proc = subprocess.run([sys.executable, "-m", "litesweep.search", *QUICK_OVERRIDES, "space.groups={heads:'head.*'}",
                           f"paths.output_dir={out}", f"paths.cache_dir={cache}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("litesweep")]
    assert lines == ["litesweep: error: space.groups.heads = 'head.*' matches no layer; accepted layer names: ['conv1', 'fc1', 'logits']"]
    assert not (out / "mlruns").exists()
    assert not list(tmp_path.rglob("*.keras")), "no base model should have been trained"
