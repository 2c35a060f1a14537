"""A password in the tracking URI is never written or printed: not by the sweep, not by litesweep-pick.

A real ``mlflow server`` on 127.0.0.1 takes the URI with ``user:password@`` (it has no auth, so it ignores
the credentials); every byte the commands printed or wrote is then searched for the password.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import QUICK_OVERRIDES
from tests.servers import start_mlflow, stop

SECRET = "tr4ck-s3cret"


def test_no_command_prints_or_writes_the_tracking_password(tmp_path: Path) -> None:
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server, url = start_mlflow("server", "--backend-store-uri", f"sqlite:///{server_dir}/mlflow.db",
                               "--artifacts-destination", str(server_dir / "artifacts"))
    try:
        uri = url.replace("http://", f"http://alice:{SECRET}@")
        out = tmp_path / "out"
        common = [*QUICK_OVERRIDES, f"paths.output_dir={out}", f"tracking.uri={uri}", "study.name=secrets"]
        # Seeded injection: trial 1 of this study fails and logs its traceback (where an error may quote a URI).
        sweep = subprocess.run([sys.executable, "-m", "search", *common, "study.n_trials=2", "study.presets=false",
                                "study.inject_failures=0.5", "study.max_failure_rate=1.0", f"hydra.run.dir={out}/hydra-sweep"],
                               capture_output=True, text=True, timeout=600)
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        picked = subprocess.run([str(Path(sys.executable).parent / "litesweep-pick"), *common, "pick.register=secrets-model",
                                 f"hydra.run.dir={out}/hydra-pick"], capture_output=True, text=True, timeout=600)
        assert picked.returncode == 0, picked.stderr[-3000:]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("secrets").experiment_id], max_results=1000)
    finally:
        stop(server)

    for name, text in {"sweep": sweep.stdout + sweep.stderr, "pick": picked.stdout + picked.stderr}.items():
        assert SECRET not in text, f"{name} printed the password"
    assert "alice:***@" in picked.stdout, "the serve command names the masked URI"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "MODEL_CARD.md" for p in written) and any(p.name == "traceback.txt" for p in written)
    assert any(p.parent.name == ".hydra" for p in written) and any(p.suffix == ".log" for p in written)
    for path in written:  # the run folders, Hydra's files and logs, the export, the server's store and artifacts
        assert SECRET.encode() not in path.read_bytes(), f"{path} holds the password"

    assert any(r.info.status == "FAILED" for r in runs), "a trial failed and logged its traceback"
    logged = " ".join(f"{k}={v}" for r in runs for k, v in {**r.data.params, **r.data.tags}.items())
    assert SECRET not in logged and "alice:***@" in logged, "the parent run records the masked tracking URI"
