"""Benchmark: does the cost between trials stay flat as a study grows?

Runs one long post-training study (``space=ptq``, the default model: MNIST-5k, ``small_cnn``) as a real
``litesweep`` command, then reads every trial's timestamps back from the study: the time inside a trial
(Optuna's start to complete), the gap before the next one starts, and the sampler's own share of that gap
(the part of ``study.ask`` before Optuna stamps the next trial's start, timed by the runner in the same run:
``ask_in_gap`` in each trial's timings). litesweep's share of
a gap is the gap minus the ask. Windows of 100 trials; a plot of the gap against the trial number. Prints a
table and writes ``benchmarks/reports/scale_<storage>.{md,json,png}``.

Run::

    .venv/bin/python benchmarks/scale.py --trials 2000                      # journal storage
    .venv/bin/python benchmarks/scale.py --trials 2000 --storage sqlite
    .venv/bin/python benchmarks/scale.py --trials 400 --workers 2
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
WINDOW = 100


def sweep(out: Path, n_trials: int, storage: str, workers: int, extra: list[str]) -> float:
    """One ``litesweep`` command; its wall seconds."""
    store = out / "mlruns"
    uri = f"sqlite:///{store}/optuna.db" if storage == "sqlite" else f"{store}/optuna.journal"
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "litesweep"), f"paths.output_dir={out}",
                    f"paths.cache_dir={ROOT / '.cache' / 'litesweep'}", "space=ptq", f"study.n_trials={n_trials}",
                    f"study.storage={uri}", f"study.n_workers={workers}", "study.presets=false", "study.name=scale",
                    "progress=false", *extra], check=True, cwd=out, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def gaps(out: Path, storage: str) -> list[dict[str, float]]:
    """Per trial, by start time: seconds inside it, the gap after it, and the next trial's ask."""
    import optuna

    store = out / "mlruns"
    backend = (f"sqlite:///{store}/optuna.db" if storage == "sqlite"
               else optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(store / "optuna.journal"))))
    study = optuna.load_study(study_name="scale", storage=backend)
    trials = sorted((t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_start)
    rows = []
    for i, t in enumerate(trials):
        inside = (t.datetime_complete - t.datetime_start).total_seconds()
        row = {"number": t.number, "index": i, "inside_s": inside,
               "complete": t.datetime_complete.timestamp(), "state": t.state.name}
        if i + 1 < len(trials):
            nxt = trials[i + 1]
            row["gap_s"] = (nxt.datetime_start - t.datetime_complete).total_seconds()
            row["ask_s"] = float(nxt.user_attrs.get("timings", {}).get("ask_in_gap", 0.0))
            row["own_gap_s"] = row["gap_s"] - row["ask_s"]
        rows.append(row)
    return rows


def table(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    windows = []
    for start in range(0, len(rows), WINDOW):
        part = rows[start:start + WINDOW]
        with_gap = [r for r in part if "gap_s" in r]
        before = rows[start - 1]["complete"] if start else part[0]["complete"] - part[0]["inside_s"]
        span = part[-1]["complete"] - before
        windows.append({
            "trials": f"{start}-{start + len(part)}", "per_hour": len(part) / span * 3600,
            "inside_s": statistics.fmean(r["inside_s"] for r in part),
            "gap_s": statistics.fmean(r["gap_s"] for r in with_gap) if with_gap else float("nan"),
            "max_gap_s": max((r["gap_s"] for r in with_gap), default=float("nan")),
            "ask_s": statistics.fmean(r["ask_s"] for r in with_gap) if with_gap else float("nan"),
            "own_gap_s": statistics.fmean(r["own_gap_s"] for r in with_gap) if with_gap else float("nan"),
            "max_own_gap_s": max((r["own_gap_s"] for r in with_gap), default=float("nan")),
        })
    return windows


def plot(rows: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = [r["index"] for r in rows if "gap_s" in r]
    ax.plot(xs, [1000 * r["gap_s"] for r in rows if "gap_s" in r], ".", ms=2, label="gap between trials")
    ax.plot(xs, [1000 * r["own_gap_s"] for r in rows if "gap_s" in r], ".", ms=2, label="litesweep's share (gap - ask)")
    ax.plot(xs, [1000 * r["ask_s"] for r in rows if "gap_s" in r], ".", ms=2, label="sampler (ask)")
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--storage", choices=("journal", "sqlite"), default="journal")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports")
    parser.add_argument("overrides", nargs="*", help="more litesweep overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wall = sweep(Path(tmp), args.trials, args.storage, args.workers, args.overrides)
        rows = gaps(Path(tmp), args.storage)
    windows = table(rows)
    name = f"scale_{args.storage}" + (f"_{args.workers}workers" if args.workers > 1 else "")
    command = f"`.venv/bin/python {' '.join(sys.argv)}`"
    lines = [f"# Cost between trials as a study grows ({args.storage}, {args.workers} worker(s))", "",
             f"Command: {command}  ", f"Machine: {platform.machine()}, Python {platform.python_version()}; "
             f"{len(rows)} trials in {wall:.0f} s (whole command).", "",
             "| trials | trials/hour | mean inside a trial s | mean gap s | max gap s | mean ask s | litesweep's gap s (mean) | (max) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {w['trials']} | {w['per_hour']:,.0f} | {w['inside_s']:.3f} | {w['gap_s']:.3f} | {w['max_gap_s']:.3f} | "
              f"{w['ask_s']:.3f} | {w['own_gap_s']:.3f} | {w['max_own_gap_s']:.3f} |" for w in windows]
    if len(windows) >= 20:
        early, late = windows[1]["per_hour"], windows[19]["per_hour"]
        lines += ["", f"- throughput over trials 1900-2000 / over trials 100-200: **{late / early:.2f}** (target >= 0.7)"]
    worst = max(w["own_gap_s"] for w in windows if w["own_gap_s"] == w["own_gap_s"])
    lines += [f"- litesweep's share of the gap, worst window mean: **{1000 * worst:.0f} ms** (target <= 50 ms at every point)"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps({"windows": windows, "wall_s": wall, "argv": sys.argv}, indent=2))
    plot(rows, args.out / f"{name}.png", f"{args.storage}, {args.workers} worker(s): gap between trials")


if __name__ == "__main__":
    main()
