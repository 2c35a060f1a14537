"""Measure a ``.tflite``'s latency on a target device through a user-supplied shell command.

The command is a template: ``{model}`` becomes the path of a temporary copy of the ``.tflite``
(shell-quoted) and ``{threads}`` the thread count, e.g.::

    adb push {model} /data/local/tmp/m.tflite && adb shell /data/local/tmp/benchmark_model \
        --graph=/data/local/tmp/m.tflite --num_threads={threads}

The latency is read from the command's stdout with a regular expression. It runs through the shell
on purpose (pipes, ``adb``, ``ssh``), so the template is trusted the way a Makefile is; only the
model path is generated, and it is quoted. Results can be cached on disk, keyed by the model bytes
and every setting that changes the number, so re-measuring a front on a phone costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path

from litesweep.objectives.errors import ConfigError, LitesweepError

__all__ = ["CommandLatency", "CommandResult", "DeviceLatencyError"]

PLACEHOLDERS = ("model", "threads")
UNITS = {"us": 1e-3, "ms": 1.0}  # factor to milliseconds
STDOUT_TAIL_CHARS = 2000
_SNIPPET_CHARS = 200
_CACHE_VERSION = 1


class DeviceLatencyError(LitesweepError, RuntimeError):
    """The device command failed, timed out, or printed no latency the pattern could read."""


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """One latency reading of a ``.tflite`` on the device."""

    latency_ms: float
    cached: bool
    stdout_tail: str  # last STDOUT_TAIL_CHARS characters of the command's stdout, for logging


@dataclasses.dataclass(frozen=True)
class CommandLatency:
    """Latency of a ``.tflite`` as reported by a shell command that runs it on a target device.

    Attributes:
        command: Shell command template with ``{model}`` (required) and optionally ``{threads}``;
            write ``{{`` and ``}}`` for literal braces (e.g. ``${{HOME}}``).
        pattern: Regular expression searched in the command's stdout. Either exactly one capturing
            group, read in ``unit``, or a named group ``ms`` or ``us`` that sets the unit itself.
            When it matches several times the last match is used: benchmark tools print warm-up
            statistics before the final ones (``benchmark_model`` prints ``avg=`` twice).
        unit: Unit of the number captured by an unnamed group: ``us`` (what LiteRT's
            ``benchmark_model`` prints) or ``ms``.
        threads: Substituted for ``{threads}``; part of the cache key.
        timeout_s: Seconds before the command (and every process it started) is killed.
        cache_dir: Directory of cached results (one JSON file per key), or ``None`` for no cache.
    """

    command: str
    pattern: str
    unit: str = "us"
    threads: int = 1
    timeout_s: float = 300.0
    cache_dir: str | None = None

    def validate(self) -> None:
        """Check every setting without running anything.

        Raises:
            ConfigError: empty command, no ``{model}``, unknown placeholder, malformed template,
                invalid regex, pattern without a usable group, unknown unit, ``threads < 1`` or
                ``timeout_s <= 0``.
        """
        if not isinstance(self.command, str) or not self.command.strip():
            raise ConfigError(
                f"latency command = {self.command!r} is empty; accepted: a shell command containing {{model}}"
            )
        names = _placeholders(self.command)
        unknown = sorted({n for n in names if n not in PLACEHOLDERS})
        if unknown:
            shown = ", ".join("{" + n + "}" for n in unknown)
            raise ConfigError(
                f"latency command has unknown placeholder(s) {shown}; accepted: {{model}}, {{threads}} "
                "(write {{ and }} for literal braces)"
            )
        if "model" not in names:
            raise ConfigError(
                f"latency command = {self.command!r} has no {{model}} placeholder; accepted: a command that reads {{model}}"
            )
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"latency threads = {self.threads!r} is out of range; accepted: an integer >= 1")
        try:
            self._render("/tmp/model.tflite")
        except (ValueError, TypeError) as exc:  # a format spec that does not fit, e.g. {threads:s}
            raise ConfigError(f"latency command = {self.command!r} is not a valid template: {exc}") from None
        self._group()
        if self.unit not in UNITS:
            raise ConfigError(f"latency unit = {self.unit!r} is unknown; accepted: {sorted(UNITS)}")
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigError(f"latency timeout_s = {timeout!r} is out of range; accepted: a number of seconds > 0")

    def measure(self, tflite: bytes) -> CommandResult:
        """Latency of ``tflite`` on the device, from the cache when this exact measurement was made.

        Raises:
            ConfigError: the settings are invalid (see ``validate``).
            DeviceLatencyError: the command exited non-zero, timed out, or its stdout had no
                latency the pattern could read. Failures are never cached.
        """
        self.validate()
        entry = self._cache_path(tflite)
        if entry is not None:
            hit = _read_entry(entry)
            if hit is not None:
                return hit
        stdout = self._run(tflite)
        result = CommandResult(self._parse(stdout), cached=False, stdout_tail=stdout[-STDOUT_TAIL_CHARS:])
        if entry is not None:
            _write_entry(entry, result, self._key_fields(tflite))
        return result

    # -- template and pattern ------------------------------------------------------------------

    def _render(self, model_path: str) -> str:
        return self.command.format(model=shlex.quote(model_path), threads=self.threads)

    def _group(self) -> tuple[int | str, str]:
        """The group holding the number and its unit (a named ``ms``/``us`` group overrides ``unit``)."""
        try:
            regex = re.compile(self.pattern)
        except (re.error, TypeError) as exc:
            raise ConfigError(f"latency pattern = {self.pattern!r} is not a valid regular expression: {exc}") from None
        named = [name for name in ("ms", "us") if name in regex.groupindex]
        if len(named) == 2:
            raise ConfigError(f"latency pattern = {self.pattern!r} has both groups 'ms' and 'us'; accepted: one of them")
        if named:
            return named[0], named[0]
        if regex.groups != 1:
            raise ConfigError(
                f"latency pattern = {self.pattern!r} has {regex.groups} capturing groups; "
                "accepted: exactly one, or a named group 'ms' or 'us'"
            )
        return 1, self.unit

    def _parse(self, stdout: str) -> float:
        group, unit = self._group()
        matches = list(re.finditer(self.pattern, stdout))
        if not matches:
            raise DeviceLatencyError(
                f"latency pattern {self.pattern!r} not found in the command's stdout "
                f"{stdout[:_SNIPPET_CHARS]!r} (append 2>&1 if the tool logs to stderr)"
            )
        captured = matches[-1].group(group)
        try:
            value = float(captured)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise DeviceLatencyError(
                f"latency pattern {self.pattern!r} captured {captured!r}; accepted: a finite number >= 0"
            )
        return value * UNITS[unit]

    # -- running -------------------------------------------------------------------------------

    def _run(self, tflite: bytes) -> str:
        """Run the command on a temporary copy of the model; returns its stdout."""
        workdir = tempfile.mkdtemp(prefix="litesweep-device-")
        try:
            model_path = os.path.join(workdir, "model.tflite")
            # Write then rename: the command never sees a partially written model.
            partial = model_path + ".partial"
            with open(partial, "wb") as f:
                f.write(tflite)
            os.replace(partial, model_path)
            return self._execute(self._render(model_path))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _execute(self, command: str) -> str:
        # Own process group, so a timeout also kills what the shell started (adb, ssh, a pipeline),
        # not just the shell; errors="replace" because device logs are not always valid UTF-8.
        with subprocess.Popen(
            command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", start_new_session=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise DeviceLatencyError(
                    f"latency command timed out after {self.timeout_s:g} s (timeout_s); "
                    "the command and its children were killed"
                ) from None
        if proc.returncode != 0:
            lines = [line.strip() for line in stderr.splitlines() if line.strip()]
            last = lines[-1] if lines else "(no stderr)"
            raise DeviceLatencyError(
                f"latency command exited with code {proc.returncode}: {last[:_SNIPPET_CHARS]!r}"
            )
        return stdout

    # -- cache ---------------------------------------------------------------------------------

    def _key_fields(self, tflite: bytes) -> dict[str, object]:
        # Unit is part of the key because the cached value is already converted to milliseconds.
        return {"model_sha256": hashlib.sha256(tflite).hexdigest(), "command": self.command,
                "pattern": self.pattern, "unit": self.unit, "threads": self.threads}

    def _cache_path(self, tflite: bytes) -> Path | None:
        if self.cache_dir is None:
            return None
        payload = json.dumps({"version": _CACHE_VERSION, **self._key_fields(tflite)}, sort_keys=True)
        return Path(self.cache_dir) / f"latency-{hashlib.sha256(payload.encode()).hexdigest()}.json"


def _placeholders(template: str) -> list[str]:
    """Field names used in ``template`` (``""`` for a positional ``{}``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        raise ConfigError(
            f"latency command = {template!r} is not a valid template: {exc}; write {{{{ and }}}} for literal braces"
        ) from None
    fields = [(name, conversion) for _, name, _, conversion in parsed if name is not None]
    for name, conversion in fields:
        if conversion is not None:  # {model!r} would undo the shell quoting
            raise ConfigError(
                f"latency command placeholder {{{name}!{conversion}}} has a conversion; accepted: {{model}}, {{threads}}"
            )
    return [name for name, _ in fields]


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    # wait(), not communicate(): a process that left the group may still hold the pipes open.
    proc.wait()


def _read_entry(path: Path) -> CommandResult | None:
    """The cached result at ``path``, or ``None`` when absent or unreadable (then it is re-measured)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return CommandResult(latency_ms=float(data["latency_ms"]), cached=True, stdout_tail=str(data["stdout_tail"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_entry(path: Path, result: CommandResult, key_fields: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": _CACHE_VERSION, **key_fields,
               "latency_ms": result.latency_ms, "stdout_tail": result.stdout_tail}
    # Temp file in the same directory then rename: a crash never leaves a half-written entry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
