"""Process-isolated trial work (``study.isolation = process``).

TensorFlow, TF-MOT, the converter and XNNPACK are native code: a segfault, an abort or a hang there would take
the whole worker down. Each worker therefore keeps one long-lived child process that builds its own workbench
once and then runs one policy at a time. A child that dies by a signal or a non-zero exit, runs past
``study.trial_timeout_s`` or grows past ``study.trial_max_memory_mb`` is killed; its trial fails alone with
:class:`TrialCrashed` (the runner records it like any failing trial) and the next trial gets a fresh child.
"""

from __future__ import annotations

import ctypes
import dataclasses
import faulthandler
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("litesweep")
#: How often the parent looks at a working child (exit, elapsed time, resident memory).
POLL_S = 0.05
#: Lines of the child's stderr quoted in a crashed trial's traceback.
STDERR_TAIL_LINES = 40  # room for faulthandler's whole Python stack
TAIL_LINE_CHARS = 300  # faulthandler lists every extension module on one line
ONEDNN_HINT = ("if trials keep dying natively while fine-tuning, TensorFlow's oneDNN path is a known cause: "
               "rerun with finetune.onednn=false (sets TF_ENABLE_ONEDNN_OPTS=0)")


class TrialCrashed(RuntimeError):
    """A trial's child process died, ran past its time limit or past its memory limit; the trial fails alone."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a trial's child may use before it is killed (None: no limit)."""

    timeout_s: float | None = None
    max_memory_mb: float | None = None


class _RemoteTraceback(Exception):
    """The child's own traceback, chained under an exception re-raised in the parent."""

    def __str__(self) -> str:
        return str(self.args[0])


def set_onednn(enabled: bool) -> None:
    """``finetune.onednn = false``: turn TensorFlow's oneDNN kernels off in this process and the ones it starts."""
    if not enabled:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


def resident_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``; None elsewhere or once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def describe_exit(exitcode: int | None) -> str:
    """``killed by SIGSEGV (exit -11)`` or ``exited with status 3``."""
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name} (exit {exitcode})"
    return f"exited with status {exitcode}"


class TrialProcess:
    """One worker's trial child: ``run(policy)`` returns what ``Workbench.run(policy)`` returns, computed in the child.

    Args:
        cfg: the composed config; the child builds its workbench from it (the base model comes from the cache).
        limits: time and memory limits of one trial.
        stderr_path: where the child's stderr goes, so a native crash's last words can be quoted.
    """

    def __init__(self, cfg: DictConfig, limits: Limits, stderr_path: Path) -> None:
        self._cfg = cfg.copy()
        OmegaConf.resolve(self._cfg)  # the child has no Hydra context to resolve ${hydra:...}
        self.limits = limits
        self.stderr_path = stderr_path
        self._process: Any = None
        self._conn: Connection | None = None
        self._ready = False

    def start(self) -> None:
        """Start a child if none is alive (it builds its workbench while the parent goes on)."""
        if self._process is not None and self._process.is_alive():
            return
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow is not fork-safe
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_child_main, args=(child_end, self._cfg, str(self.stderr_path)),
                                        name="litesweep-trial", daemon=True)
        self._process.start()
        child_end.close()
        self._ready = False

    def run(self, policy: Any, fault: str | None = None) -> Any:
        """The trial's work in the child.

        Raises:
            TrialCrashed: the child died, or was killed for its time or memory; the next call starts a fresh one.
            Exception: whatever the work raised in the child (its traceback chained), e.g. ``HopelessTrial``.
        """
        self.start()
        try:
            if not self._ready:  # a new child's first message says its workbench is built
                self._receive(time.monotonic(), building=True)
                self._ready = True
            assert self._conn is not None
            self._conn.send((policy, fault))
            kind, payload, child_traceback, records = self._receive(time.monotonic(), building=False)
        except BaseException:  # Ctrl-C, a crash or a limit: this child is done
            self.stop()
            raise
        for record in records:
            logging.getLogger(record.name).handle(record)
        if kind == "error":
            raise payload from _RemoteTraceback(child_traceback)
        return payload

    def _receive(self, started: float, building: bool) -> Any:
        assert self._conn is not None and self._process is not None
        while not self._conn.poll(POLL_S):
            self._check(started, building)
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            pass  # it died as it answered, or before
        self._process.join(5)
        self._crashed(f"trial process {describe_exit(self._process.exitcode)}", started, building, died=True)

    def _check(self, started: float, building: bool) -> None:
        assert self._process is not None
        if not self._process.is_alive():
            self._crashed(f"trial process {describe_exit(self._process.exitcode)}", started, building, died=True)
        elapsed = time.monotonic() - started
        if not building and self.limits.timeout_s is not None and elapsed > self.limits.timeout_s:
            self._crashed(f"trial ran past study.trial_timeout_s = {self.limits.timeout_s:g} s: its process was killed",
                          started, building)
        if self.limits.max_memory_mb is not None:
            rss = resident_mb(self._process.pid)
            if rss is not None and rss > self.limits.max_memory_mb:
                self._crashed(f"trial process used {rss:.0f} MB resident, above study.trial_max_memory_mb = "
                              f"{self.limits.max_memory_mb:g}: it was killed", started, building)

    def _crashed(self, what: str, started: float, building: bool, died: bool = False) -> None:
        self.stop()
        where = "while building its workbench" if building else "during the trial's work"
        hint = f"\n{ONEDNN_HINT}" if died else ""
        raise TrialCrashed(f"{what} ({where}, after {time.monotonic() - started:.1f} s); last lines of its stderr "
                           f"({self.stderr_path}):\n{self.stderr_tail()}{hint}")

    def stderr_tail(self) -> str:
        """The last lines the child wrote to its stderr."""
        try:
            with open(self.stderr_path, errors="replace") as stream:
                lines = deque((line.rstrip()[:TAIL_LINE_CHARS] for line in stream), maxlen=STDERR_TAIL_LINES)
            return "\n".join(lines).strip() or "(nothing)"
        except OSError:
            return "(no stderr file)"

    def stop(self) -> None:
        """Kill the child (if any); the next ``run`` starts a fresh one."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(10)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def close(self) -> None:
        """Let an idle child finish (end of the study), else kill it."""
        if self._conn is not None and self._process is not None and self._process.is_alive():
            try:
                self._conn.send(None)
                self._process.join(10)
            except OSError:
                pass
        self.stop()


class _RecordCollector(logging.Handler):
    """The child's warnings, sent back with each result and logged by the parent (its stderr is a file)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info = record.getMessage(), None, None  # picklable
        self.records.append(record)


def _child_main(conn: Connection, cfg: DictConfig, stderr_path: str) -> None:
    """The child: build the workbench once, then run policies until told to stop (``None``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it records the trial, then kills this
    stream = open(stderr_path, "w")  # noqa: SIM115 - fd 2 for the child's whole life
    os.dup2(stream.fileno(), 2)
    os.environ["LIBC_FATAL_STDERR_"] = "1"  # glibc's abort messages to stderr, not the terminal
    faulthandler.enable(stream)  # the Python stack of a segfault or abort, into the same file
    set_onednn(bool(cfg.finetune.onednn))
    if os.environ.get("OMP_NUM_THREADS"):  # a worker's share of the cores, inherited from it
        from litesweep.objectives.compat import limit_threads

        limit_threads(int(os.environ["OMP_NUM_THREADS"]))
    collector = _RecordCollector()
    logging.getLogger().addHandler(collector)
    from litesweep.search.workbench import build_workbench

    bench, _ = build_workbench(cfg)
    conn.send("ready")
    while (request := conn.recv()) is not None:
        policy, fault = request
        collector.records.clear()
        try:
            _inject(fault)
            reply = ("ok", bench.run(policy), "", collector.records)
        except Exception as exc:  # noqa: BLE001 - re-raised in the parent, which records the trial
            reply = ("error", exc, traceback.format_exc(), collector.records)
        try:
            conn.send(reply)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text is enough
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}"), reply[2], collector.records))


def _inject(fault: str | None) -> None:
    """Testing (``study.inject_at``): die natively, hang, or grow without bound, as native code can."""
    if fault == "abort":
        os.abort()
    elif fault == "segfault":
        ctypes.string_at(0)
    elif fault == "hang":
        time.sleep(3600)
    elif fault == "memory":
        hoard = []
        while True:  # the parent kills this past study.trial_max_memory_mb
            hoard.append(b"\x01" * (128 << 20))  # written, so resident
            time.sleep(0.02)
