"""Benchmark: trials per hour with 1 and with 3 worker processes on the same study (journal storage).

Run: ``.venv/bin/python benchmarks/workers.py [--trials 12] [--data mnist5k --model small_cnn]``.
Prints the figures and writes ``benchmarks/results/workers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "workers.json")
    args = parser.parse_args()

    from search.app import run
    from search.cli import compose_config
    from search.config import register_configs

    register_configs()
    figures: dict = {"command": " ".join(["python", "benchmarks/workers.py", *sys.argv[1:]]), "cpus": os.cpu_count(),
                     "trials": args.trials, "runs": {}}
    with tempfile.TemporaryDirectory() as cache:
        def config(out: str, trials: int, workers: int):  # noqa: ANN202
            return compose_config([f"paths.output_dir={out}", f"paths.cache_dir={cache}", f"data={args.data}",
                                   f"model={args.model}", f"study.n_trials={trials}", f"study.n_workers={workers}",
                                   "study.presets=false", "progress=false", "tracking.report_every=0"], str(ROOT / "conf"))

        with tempfile.TemporaryDirectory() as tmp:
            run(config(tmp, 1, 1))  # warm-up: trains and caches the base model, outside the timings
        for workers in (1, 3):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = run(config(tmp, args.trials, workers))
                wall = time.perf_counter() - start
            figures["runs"][f"{workers}_workers"] = {"wall_s": round(wall, 1), "finished": result.n_finished,
                                                     "trials_per_hour": round(result.n_finished / wall * 3600)}
            print(f"{workers} worker(s): {result.n_finished} trials in {wall:.1f} s = {result.n_finished / wall * 3600:.0f} trials/hour")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
