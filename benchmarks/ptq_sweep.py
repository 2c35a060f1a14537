"""Benchmark: a post-training (``space=ptq``) sweep of 50 trials on the default model.

Target (issue 3): under 5 minutes on 2 cores. Prints the figures and writes them to
``benchmarks/results/ptq_sweep.json``. Run: ``.venv/bin/python benchmarks/ptq_sweep.py [--trials 50]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ptq_sweep.json")
    args = parser.parse_args()

    started = time.perf_counter()
    from mlflow.tracking import MlflowClient

    from litesweep.search.app import run
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs
    from litesweep.search.ledger import search_all_runs, trial_runs_filter

    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([f"paths.output_dir={tmp}", "space=ptq", f"study.n_trials={args.trials}", "progress=false"],
                             str(ROOT / "conf"))
        sweep_start = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - sweep_start
        runs = search_all_runs(MlflowClient(result.tracking_uri), result.experiment_id, trial_runs_filter(result.parent_run_id))
        per_trial = [(r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time]
        convert = [r.data.metrics.get("time_convert_s", 0.0) for r in runs]
    figures = {
        "command": f"python benchmarks/ptq_sweep.py --trials {args.trials:d}",
        "trials": result.n_finished,
        "sweep_wall_s": round(wall, 1),
        "total_wall_s_including_imports": round(time.perf_counter() - started, 1),
        "trial_run_median_s": round(statistics.median(per_trial), 3),
        "ptq_quantize_median_s": round(statistics.median(convert), 4),
        "trials_per_hour": round(result.n_finished / wall * 3600),
        "front_size": len(result.front_trial_numbers),
        "target": "50 trials in under 300 s",
        "met": wall < 300,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
