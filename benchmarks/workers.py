"""Benchmark: trials per hour with 1 and with 3 workers on one study.

Two set-ups:

- ``--backend journal``: ``litesweep study.n_workers=N`` on one machine, the study in a journal file.
- ``--backend postgres``: N separate ``litesweep`` processes joining one study the distributed way, through a
  PostgreSQL server and an ``mlflow server`` (both started here on 127.0.0.1, on Debian's PostgreSQL).

Run: ``.venv/bin/python benchmarks/workers.py [--backend postgres] [--trials 12] [--data mnist5k --model small_cnn]``.
Prints the figures and writes ``benchmarks/results/workers[_postgres].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def postgres_and_tracking_server() -> Iterator[tuple[str, str]]:
    """A throw-away PostgreSQL cluster and an ``mlflow server`` on it, both on 127.0.0.1: (database URL, tracking URL)."""
    from tests.servers import free_port, start_mlflow, stop

    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="litesweep-bench-pg-"))
    os.chmod(root, 0o777)
    port = free_port()
    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", f"{root}/data", "-A", "trust", "-U", "litesweep"], check=True,
                   capture_output=True)
    subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", f"{root}/data", "-l", f"{root}/log", "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    url = f"postgresql://litesweep@127.0.0.1:{port}"
    server = None
    try:
        for db in ("studies", "mlflow"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "litesweep", "-d", "postgres", "-c",
                            f"create database {db}"], check=True, capture_output=True)
        server, tracking = start_mlflow("server", "--backend-store-uri", f"{url}/mlflow", "--artifacts-destination",
                                        f"{root}/artifacts", "--workers", "2")
        yield f"{url}/studies", tracking
    finally:
        if server is not None:
            stop(server)
        subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", f"{root}/data", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def run_processes(overrides: list[str], workers: int, out: Path) -> float:
    """Start ``workers`` litesweep processes on one study; wall seconds until the last one exits."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "litesweep.search", *overrides, f"paths.output_dir={out}/w{i}",
                               f"hydra.run.dir={out}/w{i}/hydra"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(workers)]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed:\n" + "\n".join(o[-3000:] for o in outputs))
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("journal", "postgres"), default="journal")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out_file = args.out or ROOT / "benchmarks" / "results" / ("workers.json" if args.backend == "journal" else "workers_postgres.json")

    from litesweep.search.app import run
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs
    from litesweep.search.storage import count_finished, load_existing_study

    register_configs()
    figures: dict = {"command": " ".join(["python", "benchmarks/workers.py", *sys.argv[1:]]), "backend": args.backend,
                     "cpus": os.cpu_count(), "trials": args.trials, "runs": {}}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tmp:
        common = [f"paths.cache_dir={cache}", f"data={args.data}", f"model={args.model}", "study.presets=false",
                  "progress=false", "tracking.report_interval_s=1e9"]
        run(compose_config([*common, f"paths.output_dir={tmp}/warm-up", "study.n_trials=1"], str(ROOT / "conf")))  # caches the base model
        services = postgres_and_tracking_server() if args.backend == "postgres" else contextlib.nullcontext((None, None))
        with services as (storage, tracking):
            for workers in (1, 3):
                name = f"bench-{workers}-workers"
                if args.backend == "journal":
                    start = time.perf_counter()
                    result = run(compose_config([*common, f"paths.output_dir={tmp}/{name}", f"study.n_trials={args.trials}",
                                                 f"study.n_workers={workers}", f"study.name={name}"], str(ROOT / "conf")))
                    wall, finished = time.perf_counter() - start, result.n_finished
                else:
                    wall = run_processes([*common, f"study.storage={storage}", f"tracking.uri={tracking}", f"study.name={name}",
                                          f"study.n_trials={args.trials}"], workers, Path(tmp) / name)
                    finished = count_finished(load_existing_study(name, storage))
                figures["runs"][f"{workers}_workers"] = {"wall_s": round(wall, 1), "finished": finished,
                                                         "trials_per_hour": round(finished / wall * 3600)}
                print(f"{workers} worker(s): {finished} trials in {wall:.1f} s = {finished / wall * 3600:.0f} trials/hour", flush=True)
    runs = figures["runs"]
    figures["speed_up_3_vs_1"] = round(runs["3_workers"]["trials_per_hour"] / runs["1_workers"]["trials_per_hour"], 2)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
