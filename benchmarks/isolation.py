"""Benchmark: what process-isolated trials cost (``study.isolation=process`` vs ``none``).

Runs the default sweep's model (MNIST-5k, ``small_cnn``) as separate ``litesweep`` commands, alternating
the two modes (none, process, none, process, ...) so drift on a shared machine hits both alike, for training
trials (the default space) and post-training trials (``space=ptq``). Throughput is read back from each study:
trials per hour over the trial loop (first trial started to last finished: what isolation adds per trial) and
over the whole command (start-up, presets and the child's own start included). Prints a table and writes
``benchmarks/reports/isolation.{md,json}``.

Run::

    .venv/bin/python benchmarks/isolation.py                 # 2 rounds x 12 training + 40 ptq trials per mode
    .venv/bin/python benchmarks/isolation.py --rounds 3 --training-trials 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "process")


def one_sweep(out: Path, mode: str, space: str, n_trials: int, cache: Path) -> dict[str, float]:
    """One ``litesweep`` command; its loop and wall throughput in trials per hour."""
    import optuna

    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "litesweep"), f"paths.output_dir={out}", f"paths.cache_dir={cache}",
                    f"study.isolation={mode}", f"space={space}", f"study.n_trials={n_trials}", "study.presets=false",
                    "study.preset_twins=false", "progress=false", "study.name=bench"],
                   check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name="bench", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "mlruns" / "optuna.journal"))))
    trials = [t for t in study.trials if t.datetime_complete is not None]
    loop = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    # The first trial of a process-isolated sweep may wait for its child's workbench; the rest never do.
    steady = sorted(trials, key=lambda t: t.number)[1:]
    steady_s = (max(t.datetime_complete for t in steady) - min(t.datetime_start for t in steady)).total_seconds()
    return {"trials": len(trials), "loop_per_hour": len(trials) / loop * 3600, "wall_per_hour": len(trials) / wall * 3600,
            "steady_per_hour": len(steady) / steady_s * 3600, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--training-trials", type=int, default=12)
    parser.add_argument("--ptq-trials", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports")
    args = parser.parse_args()
    cache = ROOT / ".cache" / "litesweep"
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for space, n in (("default", args.training_trials), ("ptq", args.ptq_trials)):
            for round_ in range(args.rounds):
                for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                    out = Path(tmp) / f"{space}-{mode}-{round_}"
                    out.mkdir()
                    figures = one_sweep(out, mode, space, n, cache)
                    rows.setdefault(space, {}).setdefault(mode, []).append(figures)
                    print(f"{space:8s} {mode:8s} round {round_}: {figures}", flush=True)
    lines = ["# Process-isolated trials: what they cost", "",
             f"Command: `.venv/bin/python benchmarks/isolation.py --rounds {args.rounds} --training-trials {args.training_trials} "
             f"--ptq-trials {args.ptq_trials}`  ", f"Machine: {platform.machine()}, Python {platform.python_version()}; "
             "default model (MNIST-5k, small_cnn), no presets, modes alternated.", "",
             "| space | isolation | trials/hour, trial loop | trials/hour, after the first trial | trials/hour, whole command |",
             "|---|---|---|---|---|"]
    summary: dict[str, dict[str, float]] = {}
    for space, modes in rows.items():
        for mode, runs in modes.items():
            med = {k: statistics.median(r[k] for r in runs) for k in ("loop_per_hour", "steady_per_hour", "wall_per_hour")}
            summary[f"{space}/{mode}"] = med
            lines.append(f"| {space} | {mode} | {med['loop_per_hour']:.0f} | {med['steady_per_hour']:.0f} | {med['wall_per_hour']:.0f} |")
    lines.append("")
    for space in rows:
        base, isolated = summary[f"{space}/none"], summary[f"{space}/process"]
        for key, label in (("loop_per_hour", "trial loop"), ("steady_per_hour", "after the first trial"),
                           ("wall_per_hour", "whole command")):
            lines.append(f"- {space}, {label}: process / none = **{isolated[key] / base[key]:.3f}** "
                         f"(overhead {100 * (1 - isolated[key] / base[key]):+.1f}%)")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "isolation.md").write_text(text)
    (args.out / "isolation.json").write_text(json.dumps({"runs": rows, "median": summary, "argv": sys.argv}, indent=2))


if __name__ == "__main__":
    main()
