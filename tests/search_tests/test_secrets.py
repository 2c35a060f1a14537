"""A password in the tracking URI is never written or printed: not by the sweep, not by litesweep-pick.

A real ``mlflow server`` on 127.0.0.1 takes the URI with ``user:password@`` (it has no auth, so it ignores
the credentials); every byte the commands printed or wrote is then searched for the password, and the
masked form ``alice:***@`` must be where the URI is recorded, so the test cannot pass by recording nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK_OVERRIDES
from tests.servers import free_port, start_mlflow, stop

SECRET = "tr4ck-s3cret"
MASKED = "alice:***@"
STUDY = "secrets"
PICK = [str(Path(sys.executable).parent / "litesweep-pick")]


def _common(out: Path, uri: str) -> list[str]:
    return [*QUICK_OVERRIDES, f"paths.output_dir={out}", f"tracking.uri={uri}", f"study.name={STUDY}"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def _files_holding_the_secret(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sweep with one failed trial, then ``litesweep-pick pick.register=...``, both through the real CLI."""
    root = tmp_path_factory.mktemp("secrets")
    server_dir = root / "server"
    server_dir.mkdir()
    server, url = start_mlflow("server", "--backend-store-uri", f"sqlite:///{server_dir}/mlflow.db",
                               "--artifacts-destination", str(server_dir / "artifacts"))
    try:
        out = root / "out"
        common = _common(out, url.replace("http://", f"http://alice:{SECRET}@"))
        # Seeded injection: trial 1 of this study fails and logs its traceback (where an error may quote a URI).
        sweep = _run([sys.executable, "-m", "litesweep.search", *common, "study.n_trials=2", "study.presets=false",
                      "study.inject_failures=0.5", "study.max_failure_rate=1.0", "study.max_consecutive_failures=10",
                      f"hydra.run.dir={out}/hydra-sweep"])
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        picked = _run([*PICK, *common, "pick.register=secrets-model", f"pick.output_dir={out}/picked",
                       f"hydra.run.dir={out}/hydra-pick"])
        assert picked.returncode == 0, picked.stderr[-3000:]
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(STUDY)
        assert experiment is not None
        experiment_id = experiment.experiment_id
        runs = client.search_runs([experiment_id], max_results=1000)
    finally:
        stop(server)
    return {"root": root, "out": out, "url": url, "sweep": sweep, "picked": picked, "runs": runs}


def test_no_command_prints_or_writes_the_tracking_password(swept: dict[str, Any]) -> None:
    sweep, picked, out = swept["sweep"], swept["picked"], swept["out"]
    for name, text in {"sweep": sweep.stdout + sweep.stderr, "pick": picked.stdout + picked.stderr}.items():
        assert SECRET not in text, f"{name} printed the password"
    assert f"MLFLOW_TRACKING_URI='{swept['url'].replace('http://', 'http://' + MASKED)}'" in picked.stdout, \
        "the serve command names the masked URI"

    written = [p for p in swept["root"].rglob("*") if p.is_file()]
    assert any(p.name == "traceback.txt" for p in written), "the failed trial's traceback is in the server's artifacts"
    assert any(p.suffix == ".log" for p in written) and any(p.parent.name == ".hydra" for p in written)
    # The run folders, Hydra's files and job logs, the export, the server's store and artifacts.
    assert _files_holding_the_secret(swept["root"]) == []
    # Hydra's saved files are rewritten masked, not dropped; the model card names the masked store.
    for command in ("hydra-sweep", "hydra-pick"):
        assert MASKED in (out / command / ".hydra" / "overrides.yaml").read_text()
        assert MASKED in (out / command / ".hydra" / "config.yaml").read_text()
    assert MASKED in (out / "picked" / "MODEL_CARD.md").read_text()


def test_every_param_and_tag_is_masked(swept: dict[str, Any]) -> None:
    runs = swept["runs"]
    assert any(r.info.status == "FAILED" for r in runs), "a trial failed and logged its traceback"
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in value, f"run {run.info.run_name}: {key} holds the password"
    parent = next(r for r in runs if r.data.tags.get("litesweep.role") == "study")
    assert parent.data.params["tracking.uri"] == swept["url"].replace("http://", f"http://{MASKED}")


@pytest.mark.parametrize("full_error", ["0", "1"], ids=["hydra-report", "HYDRA_FULL_ERROR=1"])
def test_an_unexpected_error_is_reported_masked(swept: dict[str, Any], full_error: str) -> None:
    """Not a LitesweepError: Hydra's own report (the overrides and the traceback), or with HYDRA_FULL_ERROR=1
    the re-raised exception's traceback, is masked too."""
    out = swept["out"]
    dead = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens: the MLflow client raises
    failed = _run([*PICK, *_common(out, dead), f"pick.output_dir={out}/picked-dead-{full_error}",
                   f"hydra.run.dir={out}/hydra-dead-{full_error}"],
                  MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5", HYDRA_FULL_ERROR=full_error)
    assert failed.returncode not in (0, 2), failed.stderr[-3000:]
    assert SECRET not in failed.stdout + failed.stderr
    assert "Traceback" in failed.stderr and MASKED in failed.stderr, failed.stderr[-3000:]
    if full_error == "0":
        assert "Error executing job with overrides" in failed.stderr
    assert _files_holding_the_secret(out / f"hydra-dead-{full_error}") == []
