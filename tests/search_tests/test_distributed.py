"""Three litesweep processes join one study through a real PostgreSQL server and a real ``mlflow server``,
both started on 127.0.0.1 by the test (``make test`` installs Debian's postgresql when missing)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK_OVERRIDES
from tests.servers import free_port, start_mlflow, stop

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not BIN and not os.environ.get("CI"), reason="PostgreSQL server binaries not installed")
SECRET = "pg-s3cret"


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():  # noqa: ANN201
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
def tracking_server(postgres: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``mlflow server`` on 127.0.0.1, runs in PostgreSQL, artifacts proxied to a folder."""
    server, url = start_mlflow("server", "--backend-store-uri", f"{postgres}/mlflow", "--artifacts-destination",
                               str(tmp_path_factory.mktemp("artifacts")), "--workers", "2")
    yield url
    stop(server)


def test_three_workers_on_postgresql_and_a_tracking_server(postgres: str, tracking_server: str, tmp_path: Path) -> None:
    n_trials = 12
    shared = [*QUICK_OVERRIDES, f"study.storage={postgres}/studies", f"tracking.uri={tracking_server}", "study.name=distributed",
              f"study.n_trials={n_trials}", "study.presets=false", f"paths.cache_dir={tmp_path}/cache"]
    workers = [subprocess.Popen([sys.executable, "-m", "search", *shared, f"paths.output_dir={tmp_path}/w{i}",
                                 f"hydra.run.dir={tmp_path}/w{i}/hydra"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(3)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    assert all(SECRET not in o for o in outputs), "a worker printed the database password"

    study = optuna.load_study(study_name="distributed", storage=f"{postgres}/studies")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert n_trials <= len(finished) <= n_trials + 2
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len({t.user_attrs["worker"] for t in finished}) >= 2, "trials came from several workers"

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("distributed")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`litesweep.role` = 'study'")
    assert len(parents) == 1, "workers started together converge on one parent run"
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`litesweep.role` = 'trial'", max_results=1000)
    assert sorted(int(r.data.tags["litesweep.trial_number"]) for r in runs) == sorted(numbers), "one MLflow run per trial"
    by_id = {r.info.run_id: r for r in runs}
    for t in complete:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert "model.tflite" in {a.path for a in client.list_artifacts(run.info.run_id)}
    logged = " ".join(f"{k}={v}" for k, v in {**parents[0].data.params, **parents[0].data.tags}.items())
    assert SECRET not in logged and "litesweep:***@" in logged
