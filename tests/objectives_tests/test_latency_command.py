"""CommandLatency against a stand-in device script (no TensorFlow, no device; a few subprocesses)."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from litesweep.objectives.errors import ConfigError, LitesweepError
from litesweep.objectives.latency_command import CommandLatency, DeviceLatencyError

#: Reads the model given as argv[1], checks the TFLite identifier, counts its runs, prints what
#: LiteRT's benchmark_model prints (warm-up avg first, then the timed runs and the summary line).
DEVICE_SCRIPT = textwrap.dedent(
    """
    import argparse, pathlib, sys, time
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--counter")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--done")
    args = parser.parse_args()
    data = pathlib.Path(args.model).read_bytes()
    if data[4:8] != b"TFL3":
        print("INFO: loading model", file=sys.stderr)
        print(f"ERROR: {args.model} is not a TFLite flatbuffer (identifier {data[4:8]!r})", file=sys.stderr)
        sys.exit(3)
    if args.counter:
        with open(args.counter, "a") as f:
            f.write(args.model + "\\n")
    time.sleep(args.sleep)
    if args.done:
        pathlib.Path(args.done).write_text("finished")
    print("INFO: STARTING!")
    print(f"INFO: Graph: [{args.model}]")
    print(f"INFO: Num threads: [{args.num_threads}]")
    print(f"INFO: Model size: {len(data)} bytes")
    print("INFO: count=10 first=567 curr=90 min=85 max=567 avg=89.5 std=12")
    print("INFO: count=50 first=44 curr=42 min=41 max=48 avg=42.25 std=1")
    print("INFO: Inference timings in us: Init: 1234, First inference: 567, Warmup (avg): 89.5, Inference (avg): 42.25")
    """
)
SUMMARY = r"Inference \(avg\): ([\d.]+)"


def _tflite(payload: bytes = b"") -> bytes:
    """Bytes a flatbuffer reader would accept as a TFLite file header: root offset then 'TFL3'."""
    return b"\x1c\x00\x00\x00TFL3" + payload


@pytest.fixture()
def device(tmp_path: Path) -> str:
    """Shell prefix that runs the stand-in device script."""
    script = tmp_path / "device.py"
    script.write_text(DEVICE_SCRIPT)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def _runs(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def test_parses_microseconds_and_substitutes_placeholders(device: str) -> None:
    latency = CommandLatency(f"{device} {{model}} --num_threads={{threads}}", SUMMARY, threads=2)
    result = latency.measure(_tflite(b"x" * 100))
    assert result.latency_ms == pytest.approx(0.04225)
    assert result.cached is False
    assert "Num threads: [2]" in result.stdout_tail
    assert "Model size: 108 bytes" in result.stdout_tail  # the whole model reached the command


def test_last_match_wins_and_named_groups_set_the_unit(device: str) -> None:
    command = f"{device} {{model}}"
    # benchmark_model prints avg= for the warm-up first; the timed runs come last.
    assert CommandLatency(command, r"avg=([\d.]+)").measure(_tflite()).latency_ms == pytest.approx(0.04225)
    assert CommandLatency(command, r"avg=([\d.]+)", unit="ms").measure(_tflite()).latency_ms == pytest.approx(42.25)
    named_us = CommandLatency(command, r"Inference \(avg\): (?P<us>[\d.]+)", unit="ms")
    assert named_us.measure(_tflite()).latency_ms == pytest.approx(0.04225)
    named_ms = CommandLatency(command, r"(?:Init): (?P<ms>\d+)")
    assert named_ms.measure(_tflite()).latency_ms == pytest.approx(1234.0)


def test_model_path_is_quoted_and_removed_afterwards(device: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = tmp_path / "dir with 'quotes' $HOME;touch pwned"
    hostile.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(hostile))
    counter = tmp_path / "runs.txt"
    latency = CommandLatency(f"cd {shlex.quote(str(tmp_path))} && {device} {{model}} --counter {counter}", SUMMARY)
    assert latency.measure(_tflite()).latency_ms == pytest.approx(0.04225)
    [model_path] = _runs(counter)
    assert model_path.startswith(str(hostile))
    assert not Path(model_path).exists()
    assert list(hostile.iterdir()) == []
    assert not (tmp_path / "pwned").exists()


def test_cache_skips_the_command_until_the_model_or_settings_change(device: str, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"
    cache = tmp_path / "cache"
    latency = CommandLatency(f"{device} {{model}} --num_threads={{threads}} --counter {counter}", SUMMARY,
                             cache_dir=str(cache))
    first = latency.measure(_tflite(b"a"))
    second = latency.measure(_tflite(b"a"))
    assert len(_runs(counter)) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.latency_ms == first.latency_ms
    assert second.stdout_tail == first.stdout_tail
    latency.measure(_tflite(b"b"))
    assert len(_runs(counter)) == 2
    CommandLatency(latency.command, latency.pattern, threads=4, cache_dir=str(cache)).measure(_tflite(b"a"))
    assert len(_runs(counter)) == 3
    entries = sorted(cache.iterdir())
    assert len(entries) == 3 and all(p.suffix == ".json" for p in entries)  # no temp files left
    assert json.loads(entries[0].read_text())["latency_ms"] == pytest.approx(0.04225)


def test_unreadable_cache_entry_is_measured_again(device: str, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"
    cache = tmp_path / "cache"
    latency = CommandLatency(f"{device} {{model}} --counter {counter}", SUMMARY, cache_dir=str(cache))
    latency.measure(_tflite())
    [entry] = cache.iterdir()
    entry.write_text("{not json")
    assert latency.measure(_tflite()).cached is False
    assert latency.measure(_tflite()).cached is True
    assert len(_runs(counter)) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"command": ""}, "latency command = '' is empty; accepted: a shell command containing {model}"),
        ({"command": "   "}, "latency command = '   ' is empty"),
        ({"command": "benchmark_model --graph=m.tflite"},
         "latency command = 'benchmark_model --graph=m.tflite' has no {model} placeholder"),
        ({"command": "adb -s {device} push {model}"},
         "latency command has unknown placeholder(s) {device}; accepted: {model}, {threads}"),
        ({"command": "run {model} {} {model.name}"}, "unknown placeholder(s) {}, {model.name}"),
        ({"command": "run {model"}, "latency command = 'run {model' is not a valid template"),
        ({"command": "run {model!r}"}, "placeholder {model!r} has a conversion"),
        ({"command": "run {model} {threads:s}"}, "latency command = 'run {model} {threads:s}' is not a valid template"),
        ({"pattern": "avg=([\\d."}, "latency pattern = 'avg=([\\\\d.' is not a valid regular expression"),
        ({"pattern": "avg=\\d+"}, "has 0 capturing groups; accepted: exactly one, or a named group 'ms' or 'us'"),
        ({"pattern": "(min)=(\\d+)"}, "has 2 capturing groups"),
        ({"pattern": "(?P<ms>\\d+) (?P<us>\\d+)"}, "has both groups 'ms' and 'us'; accepted: one of them"),
        ({"unit": "s"}, "latency unit = 's' is unknown; accepted: ['ms', 'us']"),
        ({"threads": 0}, "latency threads = 0 is out of range; accepted: an integer >= 1"),
        ({"threads": True}, "latency threads = True is out of range"),
        ({"timeout_s": 0}, "latency timeout_s = 0 is out of range; accepted: a number of seconds > 0"),
    ],
)
def test_invalid_settings_raise_one_line_config_errors(settings: dict, message: str, tmp_path: Path) -> None:
    fields = {"command": "run {model}", "pattern": SUMMARY, "cache_dir": str(tmp_path / "cache"), **settings}
    latency = CommandLatency(**fields)
    with pytest.raises(ConfigError) as info:
        latency.validate()
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):  # measure validates before running anything
        latency.measure(_tflite())
    assert not (tmp_path / "cache").exists()


def test_literal_braces_are_allowed() -> None:
    CommandLatency("sh -c 'echo ${{HOME}}' {model} {threads:02d}", SUMMARY).validate()


def test_non_zero_exit_names_code_and_last_stderr_line(device: str, tmp_path: Path) -> None:
    latency = CommandLatency(f"{device} {{model}}", SUMMARY, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DeviceLatencyError) as info:
        latency.measure(b"not a flatbuffer")
    message = str(info.value)
    assert message.startswith("latency command exited with code 3: \"ERROR: ")
    assert "is not a TFLite flatbuffer (identifier b'a fl')" in message
    assert "loading model" not in message and "\n" not in message
    assert isinstance(info.value, LitesweepError)
    assert not (tmp_path / "cache").exists()  # failures are not cached


def test_exit_without_stderr() -> None:
    with pytest.raises(DeviceLatencyError, match=r"^latency command exited with code 7: '\(no stderr\)'$"):
        CommandLatency("test -f {model} && exit 7", SUMMARY).measure(_tflite())


def test_timeout_kills_the_command_and_its_children(device: str, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    # A pipeline: the shell is not the only process to kill.
    latency = CommandLatency(f"{device} {{model}} --sleep 1 --done {done} | cat", SUMMARY, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(DeviceLatencyError) as info:
        latency.measure(_tflite())
    assert time.monotonic() - started < 0.9
    assert str(info.value) == (
        "latency command timed out after 0.3 s (timeout_s); the command and its children were killed"
    )
    time.sleep(1.0)
    assert not done.exists()  # the device script died with the shell


def test_pattern_not_found_shows_the_start_of_stdout(device: str) -> None:
    latency = CommandLatency(f"{device} {{model}}", r"p50=([\d.]+)")
    with pytest.raises(DeviceLatencyError) as info:
        latency.measure(_tflite())
    message = str(info.value)
    assert message.startswith(
        "latency pattern 'p50=([\\\\d.]+)' not found in the command's stdout 'INFO: STARTING!\\nINFO: Graph:"
    )
    assert message.endswith("(append 2>&1 if the tool logs to stderr)")
    assert "\n" not in message
    assert len(message) < 400  # only the first 200 characters of stdout


def test_captured_text_must_be_a_number(device: str) -> None:
    # The last match is used: the summary line's first word.
    with pytest.raises(DeviceLatencyError, match=r"captured 'Inference'; accepted: a finite number >= 0$"):
        CommandLatency(f"{device} {{model}}", r"INFO: (\S+)").measure(_tflite())
