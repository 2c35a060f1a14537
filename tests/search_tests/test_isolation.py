"""Process-isolated trials: a trial whose child process aborts, segfaults, hangs or runs away with memory fails
alone (FAIL in Optuna, FAILED in MLflow with the reason in traceback.txt), and the sweep finishes its other trials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from litesweep.search.app import run
from litesweep.search.isolation import Limits, TrialProcess, describe_exit, resident_mb
from litesweep.search.runner import injection_point
from tests.conftest import QUICK_OVERRIDES, compose_quick, processes_holding

FAULTS = ("abort", "segfault", "hang", "memory")
# This study name makes the seeded injection strike trials 0 (hang), 3 and 5 (abort), 4 (segfault), 6 (memory);
# trials 1, 2 and 7 do their work.
STUDY = "native-17"
TIMEOUT_S = 20
MEMORY_MB = 3000  # far above a child with TensorFlow and the tiny CNN (< 1.5 GB), far below the machine
REASONS = {"abort": "killed by SIGABRT", "segfault": "killed by SIGSEGV", "hang": f"study.trial_timeout_s = {TIMEOUT_S} s",
           "memory": f"above study.trial_max_memory_mb = {MEMORY_MB}"}


def test_native_crashes_hangs_and_runaway_memory_fail_their_trial_alone(tmp_path: Path) -> None:
    struck = {n: injection_point(STUDY, n, 0.5, FAULTS) for n in range(8)}
    assert set(struck.values()) == {None, *FAULTS}, "the seeded injection strikes every fault"
    # Post-training trials: seconds of work even on a loaded machine, so only the hang meets the time limit.
    result = run(compose_quick(tmp_path, f"study.name={STUDY}", "space=ptq", "study.n_trials=3", "study.presets=false",
                               "study.inject_failures=0.5", f"study.inject_at=[{','.join(FAULTS)}]",
                               f"study.trial_timeout_s={TIMEOUT_S}", f"study.trial_max_memory_mb={MEMORY_MB}",
                               "study.max_consecutive_failures=10", "study.max_failure_rate=1.0"))
    assert result.n_finished == 3
    study = optuna.load_study(study_name=STUDY, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(result.storage)))
    client = MlflowClient(result.tracking_uri)
    for trial in study.trials:
        fault = struck[trial.number]
        run_ = client.get_run(trial.user_attrs["mlflow_run_id"])
        if fault is None:
            assert trial.state == TrialState.COMPLETE and run_.info.status == "FINISHED", trial.number
            continue
        assert trial.state == TrialState.FAIL and run_.info.status == "FAILED", (trial.number, fault)
        text = Path(client.download_artifacts(run_.info.run_id, "traceback.txt", str(tmp_path / str(trial.number)))).read_text()
        assert "TrialCrashed" in text and REASONS[fault] in text, (fault, text[-1500:])
        assert "last lines of its stderr" in text and "during the trial's work, after" in text
        if fault in ("abort", "segfault"):  # faulthandler's Python stack, from the child's stderr
            assert "Fatal Python error" in text and "finetune.onednn=false" in text
    assert [t.number for t in study.trials] == list(range(8)), "every trial is in the study, none retried endlessly"
    assert not processes_holding(tmp_path / "logs" / f"trial-process-{os.getpid()}.stderr"), "the last child was stopped"
    audit = subprocess.run([sys.executable, "-c", "from litesweep.search.audit import main; main()", *QUICK_OVERRIDES,
                            f"paths.output_dir={tmp_path}", f"study.name={STUDY}"], capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert "3 re-measured on validation" in audit.stdout and "0 problem(s)" in audit.stdout, audit.stdout[-1500:]


def test_a_child_that_cannot_build_its_workbench_is_reported_with_its_exit_status(tmp_path: Path) -> None:
    cfg = compose_quick(tmp_path, "data=npz", f"data.path={tmp_path / 'missing.npz'}")
    child = TrialProcess(cfg, Limits(), tmp_path / "child.stderr")
    try:
        child.run(policy=None)
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("a child whose workbench cannot be built must fail the trial")
    assert message.startswith("trial process exited with status 1 (while building its workbench"), message[:300]
    assert "missing.npz" in message, "the child's own error is quoted from its stderr"
    assert child.stderr_tail() != "(nothing)"


def test_exit_descriptions_and_memory_readings() -> None:
    assert describe_exit(-6) == "killed by SIGABRT (exit -6)"
    assert describe_exit(-9) == "killed by SIGKILL (exit -9)"
    assert describe_exit(3) == "exited with status 3"
    mine = resident_mb(os.getpid())
    assert mine is not None and 10 < mine < 24 * 1024
    assert resident_mb(2**22 + 12345) is None  # no such process
