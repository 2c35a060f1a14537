"""Three litesweep processes join one study through a real PostgreSQL server and a real ``mlflow server``,
both started on 127.0.0.1 by the test (``make test`` installs Debian's postgresql when missing)."""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import QUICK_OVERRIDES
from tests.servers import free_port, start_mlflow, stop

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not BIN and not os.environ.get("CI"), reason="PostgreSQL server binaries not installed")
SECRET = "pg-s3cret"


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1 with databases ``studies`` and ``mlflow``."""
    bindir = BIN[-1]
    root = Path(tempfile.mkdtemp(prefix="litesweep-pg-", dir="/tmp"))
    os.chmod(root, 0o777)
    data = root / "data"
    port = free_port()
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "litesweep"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                                 f"-h 127.0.0.1 -p {port} -k {root}", "start"]), check=True, capture_output=True)
    try:
        for db in ("studies", "mlflow"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "litesweep", "-d", "postgres", "-c",
                            f"create database {db}"], check=True, capture_output=True)
        yield f"postgresql://litesweep:{SECRET}@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres: str, tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on 127.0.0.1, runs in PostgreSQL, artifacts proxied to a folder."""
    server, url = start_mlflow("server", "--backend-store-uri", f"{postgres}/mlflow", "--artifacts-destination",
                               str(tmp_path_factory.mktemp("artifacts")), "--workers", "2")
    yield url
    stop(server)


REMOTE = "litesweep-remote"
#: As root, one worker runs under another hostname (a UTS namespace): to the others it is on another machine,
#: so when it is killed only Optuna's heartbeat can tell it is dead.
CAN_FAKE_HOST = os.geteuid() == 0 and shutil.which("unshare") is not None


def _worker(shared: list[str], out: Path, remote: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "litesweep.search", *shared, f"paths.output_dir={out}", f"hydra.run.dir={out}/hydra"]
    if remote:
        args = ["unshare", "--uts", "sh", "-c", f'hostname {REMOTE} && exec "$@"', "sh", *args]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage, retried while the workers starting beside it race to create Optuna's tables."""
    for attempt in range(20):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception:  # the table-creation race raises one of several database errors
            if attempt == 19:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _remote_trial_running(storage: optuna.storages.BaseStorage) -> bool:
    """Whether the remote worker has had a trial running (with its MLflow run) for a second."""
    try:
        study = optuna.load_study(study_name="distributed", storage=storage)
    except KeyError:
        return False
    now = datetime.datetime.now()
    return any(t.user_attrs.get("worker", "").startswith(f"{REMOTE}:") and "mlflow_run_id" in t.user_attrs
               and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > 1
               for t in study.get_trials(states=(TrialState.RUNNING,)))


def test_three_workers_on_postgresql_and_a_tracking_server(postgres: str, tracking_server: str, tmp_path: Path) -> None:
    n_trials = 12
    storage = f"{postgres}/studies"
    shared = [*QUICK_OVERRIDES, f"study.storage={storage}", f"tracking.uri={tracking_server}", "study.name=distributed",
              f"study.n_trials={n_trials}", "study.presets=false", f"paths.cache_dir={tmp_path}/cache",
              "study.inject_failures=0.15", "study.inject_at=[sampled,measured,logged]", "study.max_failure_rate=1.0",
              "study.max_consecutive_failures=20", "study.heartbeat_interval_s=1", "study.heartbeat_grace_s=10"]
    workers = [_worker(shared, tmp_path / f"w{i}", remote=CAN_FAKE_HOST and i == 2) for i in range(3)]
    killed = None
    if CAN_FAKE_HOST:
        deadline = time.time() + 600
        # One storage (one connection pool) for all the polling: a new one per poll leaks connections until
        # the garbage collector runs, and PostgreSQL then refuses clients ("too many clients already").
        polling = _rdb_storage(storage)
        while not _remote_trial_running(polling):
            assert time.time() < deadline and workers[2].poll() is None, "the remote worker never ran a trial"
            time.sleep(0.5)
        polling.engine.dispose()
        workers[2].kill()  # SIGKILL mid-trial
        killed = workers.pop()
        killed.communicate()
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * len(workers), "\n".join(o[-2000:] for o in outputs)
    assert all(SECRET not in o for o in outputs), "a worker printed the database password"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"{path} holds the database password"

    study = optuna.load_study(study_name="distributed", storage=storage)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "unique trial numbers"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n_trials <= len(finished) <= n_trials + 2
    assert len({t.user_attrs["worker"] for t in finished}) >= 2, "trials came from several workers"

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("distributed")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`litesweep.role` = 'study'")
    assert len(parents) == 1, "workers started together converge on one parent run"
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`litesweep.role` = 'trial'", max_results=1000)
    assert sorted(int(r.data.tags["litesweep.trial_number"]) for r in runs) == sorted(numbers), "one MLflow run per trial"
    assert not client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"), "no run left RUNNING"
    by_id = {r.info.run_id: r for r in runs}
    status = {TrialState.COMPLETE: {"FINISHED"}, TrialState.PRUNED: {"KILLED"}, TrialState.FAIL: {"FAILED", "KILLED"}}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert int(run.data.tags["litesweep.trial_number"]) == t.number, "trial number <-> run id"
        assert run.info.status in status[t.state] and run.data.tags["litesweep.state"] == t.state.name, (t.number, t.state)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        if t.state == TrialState.COMPLETE:
            assert "model.tflite" in {a.path for a in client.list_artifacts(run.info.run_id)}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "the injected failures struck"
    if killed is not None:
        remote = [t for t in trials if t.user_attrs.get("worker", "").startswith(f"{REMOTE}:")]
        # Its injected failures are FAILED runs; the trial it died in is the KILLED one, and its last.
        dead = [t for t in remote if t.state == TrialState.FAIL and by_id[t.user_attrs["mlflow_run_id"]].info.status == "KILLED"]
        assert len(dead) == 1 and dead[0].number == max(t.number for t in remote), [(t.number, t.state) for t in remote]
        assert by_id[dead[0].user_attrs["mlflow_run_id"]].info.status == "KILLED"
        assert "worker died" in by_id[dead[0].user_attrs["mlflow_run_id"]].data.tags["litesweep.note"]
        retried = [t for t in trials if t.user_attrs.get("retry_of") == dead[0].number]
        assert len(retried) == 1 and retried[0].params == dead[0].params, "the dead worker's trial was retried"
    logged = " ".join(f"{k}={v}" for k, v in {**parents[0].data.params, **parents[0].data.tags}.items())
    assert SECRET not in logged and "litesweep:***@" in logged
