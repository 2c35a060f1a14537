"""The litesweep benchmark: is the front better than the presets and than random search, and are trials fast?

Each phase runs the real ``litesweep`` command (a subprocess, as a user would) on one task, into one
store per task under ``--out``; ``report`` reads those stores and writes ``report.json`` and ``report.md``.

Phases:
    search      the default sampler with a wall-time budget (``--minutes``), presets evaluated beside it.
    compare     the default sampler vs Optuna's RandomSampler (and the default sampler started by the
                post-training screen), same space and trial budget (``--trials``), over ``--seeds``
                seeds; normalized hypervolume at a fixed reference point.
    throughput  ``--trials`` post-training (``space=ptq``) and training (default space) trials:
                trials per hour and overhead share.
    report      figures of whatever phases have run so far (always runs last). With ``--test-all``, every
                COMPLETE trial of the search is also measured on the test split (the search itself measures
                only front trials there), so the optimism of selecting on validation can be told apart from
                the validation/test split's own difference.

Tasks: ``fashion_mnist`` (60k/10k from Debian's dataset-fashion-mnist, ``fashion_cnn``), ``cifar10``
(``../shared/datasets/cifar10_jpeg.npz``, ``mobilenet_tiny`` with BatchNorm), ``cifar10_resnet8`` (the same
data, ``resnet8``) and ``default`` (the default sweep's
MNIST-5k and ``small_cnn``).

Run::

    make bench                                             # fashion_mnist: search 60 min, compare, throughput
    .venv/bin/python benchmarks/run.py --task default --phases compare throughput --trials 40
    .venv/bin/python benchmarks/run.py --task fashion_mnist --phases report   # re-read the stores
    .venv/bin/python benchmarks/run.py --task default --phases search report --minutes 8 --test-all

Accuracy figures: ``accuracy``/``accuracy_drop`` are validation figures (what the search selects by);
``test_*`` are the untouched test split's (measured for the float reference, presets and front trials).
Latency: ``latency_ms`` is each file's one reading during the search; ``latency_ms_confirmed`` (with
``latency_ms_low``/``_high``) is the end-of-run re-timing of front trials and presets side by side.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litesweep.objectives.metrics import CONFIRMED_LATENCY_NAMES, TEST_METRIC_NAMES
from litesweep.search import baselines, pareto
from litesweep.search.ledger import (
    CONFIRMED_ATTR_PREFIX,
    FINGERPRINT_ATTR,
    TAG_PRESET,
    TFLITE_FILE,
    StudyView,
    TrialRecord,
    figures_of,
    open_view,
)

ROOT = Path(__file__).resolve().parent.parent

SHARED_CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10_jpeg.npz"
DROP_BUDGET = 1.0  # accuracy points: "no worse than 1 point below float"
# Normalized objectives for hypervolume: accuracy drop in points / 5, size / float32 size, latency /
# float32 latency. Fixed reference point in those units (trials beyond it add nothing):
HV_REFERENCE = (1.0, 1.0, 1.5)  # = 5 points of accuracy drop, float32 size, 1.5x float32 latency
HV_REFERENCE_LOOSE = (4.0, 1.0, 3.0)  # = 20 points, float32 size, 3x float32 latency (sensitivity check)
PRESET_FULL_INT8 = "full_int8"
#: Presets whose confirmed latency the report states (beside the fastest front trial).
LATENCY_PRESETS = ("full_int8", "dynamic_int8", "float32")
CONFIRMED = CONFIRMED_LATENCY_NAMES[0]  # latency_ms_confirmed
#: The figures shown for a chosen model: validation (selected by), then test and confirmed latency beside them when present.
PICK = ("accuracy", "accuracy_drop", "size_bytes", "size_gzip_bytes", "latency_ms")
BESIDE = (*TEST_METRIC_NAMES, *CONFIRMED_LATENCY_NAMES)
OBJECTIVES = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def task_overrides(task: str, out: Path) -> list[str]:
    """The Hydra overrides that define a benchmark task (data and model)."""
    if task == "fashion_mnist":
        # Trials fine-tune on a fixed 12k subset (the fidelity knob); the base model trains on all 54k.
        return ["data=keras", "data.dataset=fashion_mnist", "model=fashion_cnn", "finetune.max_train_samples=12000",
                "finetune.prune_epochs=1", "finetune.batch_size=128", "finetune.learning_rate=0.0005"]
    if task == "cifar10":
        return ["data=npz", f"data.path={cifar_npz(out)}", "data.name=cifar10", "model=mobilenet_tiny",
                "finetune.max_train_samples=10000", "finetune.prune_epochs=1", "finetune.batch_size=128"]
    if task == "cifar10_resnet8":
        return ["data=npz", f"data.path={cifar_npz(out)}", "data.name=cifar10", "model=resnet8",
                "finetune.max_train_samples=8000", "finetune.prune_epochs=1", "finetune.batch_size=128"]
    if task == "default":
        return []
    raise SystemExit(f"benchmark: --task {task!r} is unknown; accepted: cifar10, cifar10_resnet8, default, fashion_mnist")


def cifar_npz(out: Path) -> Path:
    """Decode the shared JPEG copy of CIFAR-10 once into a plain npz that ``data=npz`` reads."""
    target = out / "cifar10.npz"
    if target.exists():
        return target
    if not SHARED_CIFAR.exists():
        raise SystemExit(f"benchmark: CIFAR-10 needs {SHARED_CIFAR} (benchmark data only); not found")
    from PIL import Image

    src = np.load(SHARED_CIFAR)

    def decode(split: str) -> np.ndarray:
        blob, offsets = src[f"{split}_jpeg"], src[f"{split}_offsets"]
        return np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                         for i in range(len(offsets) - 1)])

    out.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.npz")
    np.savez(partial, x_train=decode("train"), y_train=src["train_labels"], x_test=decode("test"), y_test=src["test_labels"])
    partial.replace(target)
    return target


def store_overrides(out: Path) -> list[str]:
    """Where every ``litesweep`` command of the task writes: its store and its base-model cache."""
    return [f"paths.output_dir={out / 'store'}", f"paths.cache_dir={out / 'cache'}"]


def litesweep(out: Path, overrides: Sequence[str], log_name: str, cpus: str | None) -> float:
    """Run the ``litesweep`` command into the task's store; returns its wall time in seconds."""
    command = [sys.executable, "-m", "litesweep.search", *store_overrides(out), f"hydra.run.dir={out / 'hydra' / log_name}",
               "progress=false", *overrides]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    print("$", shlex.join(command), flush=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "logs" / f"{log_name}.log", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark: {log_name} exited {done.returncode}; see {out / 'logs' / (log_name + '.log')}")
    return wall


# --- reading the stores ---------------------------------------------------------------------------


def load_view(out: Path, name: str) -> StudyView | None:
    """A study of the task's stores, opened through the ledger (``None`` when that phase has not run)."""
    from litesweep.objectives.errors import ConfigError
    from litesweep.search.storage import load_existing_study

    journal = out / "store" / "mlruns" / "optuna.journal"
    if not journal.exists():
        return None
    try:
        study = load_existing_study(name, str(journal))
    except ConfigError:
        return None
    return open_view(study, f"sqlite:///{out / 'store' / 'mlruns' / 'mlflow.db'}")


def load_study(out: Path, name: str) -> Any:
    """A study of the task's store (``None`` when that phase has not run)."""
    view = load_view(out, name)
    return view.study if view is not None else None


def parent_figures(out: Path, study_name: str) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The float32 reference metrics and the presets' metrics, from the study's MLflow parent run."""
    view = load_view(out, study_name)
    assert view is not None
    reference = view.reference()
    reference["base_model.epochs"] = view.parent.data.metrics.get("base_model.epochs", float("nan"))
    return reference, view.presets()


def completed(study: Any) -> list[dict[str, float]]:
    """Figures of every COMPLETE trial: validation metrics, plus test figures and confirmed latency where the
    study has them (front trials; ``ledger.figures_of``)."""
    return list(completed_by_number(study).values())


def completed_by_number(study: Any) -> dict[int, dict[str, float]]:
    """``completed``, by trial number."""
    from optuna.trial import TrialState

    return {t.number: figures_of(study, t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def trial_timings(study: Any) -> list[dict[str, float]]:
    """The per-phase timings of every trial that recorded them."""
    return [r.timings for r in map(TrialRecord.of, study.trials) if r.timings]


def normalized(metrics: dict[str, float], reference: dict[str, float]) -> tuple[float, float, float]:
    """A trial as (drop / 5 points, size / float32 size, latency / float32 latency): lower is better."""
    return (max(metrics["accuracy_drop"], 0.0) / 5.0, metrics["size_bytes"] / reference["size_bytes"],
            metrics["latency_ms"] / reference["latency_ms"])


def hypervolume(points: list[dict[str, float]], reference: dict[str, float], ref_point: Sequence[float]) -> float:
    """Hypervolume of ``points`` (normalized) inside the box up to ``ref_point``, as a share of that box."""
    from optuna._hypervolume import compute_hypervolume

    inside = [p for p in (normalized(m, reference) for m in points) if all(v < r for v, r in zip(p, ref_point, strict=True))]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.asarray(inside), np.asarray(ref_point, dtype=float))) / float(np.prod(ref_point))


def search_figures(out: Path, name: str, tested: dict[int, dict[str, float]] | None = None) -> dict[str, Any] | None:
    """Front vs presets figures of the wall-time search.

    Models are chosen on validation (``accuracy_drop``, what the search selected by); each chosen model's
    test figures and confirmed latency are shown beside it when present (``tested``: test figures the
    benchmark measured itself, ``--test-all``, for trials the study has none for). "Fastest" is chosen by
    confirmed latency among the trials that have it (the front), else by the search's own reading.
    """
    study = load_study(out, name)
    if study is None:
        return None
    reference, presets = parent_figures(out, name)
    by_number = completed_by_number(study)
    for number, test in (tested or {}).items():
        if number in by_number and TEST_METRIC_NAMES[0] not in by_number[number]:
            by_number[number] |= test
    trials = list(by_number.values())
    for number, m in by_number.items():
        m["trial"] = number
    good = [m for m in trials if m["accuracy_drop"] <= DROP_BUDGET]
    int8 = presets.get(PRESET_FULL_INT8)
    smallest = min(good, key=lambda m: m["size_bytes"], default=None)
    confirmed = [m for m in good if CONFIRMED in m]
    fastest = min(confirmed, key=lambda m: m[CONFIRMED], default=None) or min(good, key=lambda m: m["latency_ms"], default=None)
    smallest_gzip = min(good, key=lambda m: m["size_gzip_bytes"], default=None)
    good_presets = {k: v for k, v in presets.items() if v["accuracy_drop"] <= DROP_BUDGET}
    best_preset = min(good_presets.items(), key=lambda kv: kv[1]["size_bytes"], default=(None, None))
    dominated = {p: any(pareto.dominates(m, v, OBJECTIVES) for m in trials) for p, v in presets.items()}
    on_size = {p: any(pareto.dominates_or_equals(m, v, baselines.ACCURACY_AND_SIZE) for m in trials) for p, v in presets.items()}
    timings = trial_timings(study)
    figures: dict[str, Any] = {
        "study": name,
        "finished_trials": len(trials),
        "search_wall_s": _study_wall(study),
        "selected_on": "validation (accuracy_drop); test_* and latency_ms_confirmed shown beside, never selected by",
        "float32": _shown(reference),
        "base_model_epochs": reference["base_model.epochs"],
        "presets": {k: _shown(v) for k, v in presets.items()},
        "best_size_at_drop_le_1": _shown(smallest) if smallest else None,
        "best_latency_at_drop_le_1": _shown(fastest) if fastest else None,
        "best_latency_chosen_by": (CONFIRMED if fastest and CONFIRMED in fastest else "latency_ms") if fastest else None,
        "best_gzip_at_drop_le_1": _shown(smallest_gzip) if smallest_gzip else None,
        "best_preset_at_drop_le_1": best_preset[0],
        "every_preset_dominated": all(dominated.values()) if dominated else None,
        "preset_dominated": dominated,
        "every_preset_dominated_on_accuracy_size": all(on_size.values()) if on_size else None,
        "preset_dominated_on_accuracy_size": on_size,
        "overhead_share": _overhead(timings),
        "overhead_share_of_loop_wall": _study_overhead(study),
        "mean_phase_s": _mean_phases(timings),
    }
    if smallest and int8:
        figures["size_vs_full_int8"] = round(int8["size_bytes"] / smallest["size_bytes"], 2)
    if fastest and int8:
        if CONFIRMED in fastest and CONFIRMED in int8:  # both re-timed side by side at the end of the run
            figures["latency_vs_full_int8"] = round(int8[CONFIRMED] / fastest[CONFIRMED], 2)
            figures["latency_vs_full_int8_verdict"] = _verdict(fastest, int8)
            figures["latency_vs_full_int8_from"] = CONFIRMED
        else:
            figures["latency_vs_full_int8"] = round(int8["latency_ms"] / fastest["latency_ms"], 2)
            figures["latency_vs_full_int8_from"] = "latency_ms"
    if smallest_gzip:
        figures["gzip_vs_float32"] = round(reference["size_gzip_bytes"] / smallest_gzip["size_gzip_bytes"], 1)
    if smallest and best_preset[1]:
        figures["size_vs_best_preset"] = round(best_preset[1]["size_bytes"] / smallest["size_bytes"], 2)
    figures["hypervolume"] = hypervolume(trials, reference, HV_REFERENCE)
    return figures


def _shown(m: dict[str, float]) -> dict[str, Any]:
    """A chosen model's figures: validation, then test and confirmed latency beside them when present."""
    shown: dict[str, Any] = {"trial": int(m["trial"])} if "trial" in m else {}
    return shown | {k: m.get(k) for k in PICK} | {k: m[k] for k in BESIDE if k in m}


def _verdict(a: dict[str, float], b: dict[str, float]) -> str:
    """``a``'s confirmed latency against ``b``'s: "Nx as fast" only when the ranges of round medians do not
    overlap (``pareto.compare``), else "tie"."""
    order = pareto.compare(a, b, "latency_ms", "minimize")
    if order == 0:
        return "tie (ranges overlap)"
    return f"{b[CONFIRMED] / a[CONFIRMED]:.2f}x as fast" + ("" if order > 0 else " (slower)")


def _study_wall(study: Any) -> float:
    started = [t.datetime_start for t in study.trials if t.datetime_start]
    ended = [t.datetime_complete for t in study.trials if t.datetime_complete]
    return round((max(ended) - min(started)).total_seconds(), 1) if started and ended else 0.0


def _study_overhead(study: Any) -> float | None:
    """Share of the trial loop's wall time (first start to last end) outside fine-tuning, conversion and
    evaluation: per-trial overhead plus what happens between trials (report refreshes, front tags)."""
    timings = trial_timings(study)
    wall = _study_wall(study)
    work = sum(t.get(k, 0.0) for t in timings for k in ("finetune", "convert", "evaluate"))
    return round(1 - work / wall, 4) if wall else None


def _mean_phases(timings: list[dict[str, float]]) -> dict[str, float] | None:
    """Mean seconds of each trial phase."""
    phases = ("prepare", "finetune", "convert", "evaluate", "log", "overhead", "trial")
    return {k: round(statistics.mean(t.get(k, 0.0) for t in timings), 3) for k in phases} if timings else None


def _overhead(timings: list[dict[str, float]]) -> float | None:
    """Time outside fine-tuning, conversion and evaluation, over trial wall time (summed over trials)."""
    total = sum(t["trial"] for t in timings)
    return round(sum(t["overhead"] for t in timings) / total, 4) if total else None


#: The arms of the compare phase: litesweep's default sampler, Optuna's RandomSampler, and the default
#: sampler started by the post-training screen (multi-fidelity).
ARMS = {"tpe": ["study.sampler=tpe"], "random": ["study.sampler=random"], "tpe_screen": ["study.sampler=tpe", "screen=ptq"]}


def compare_figures(out: Path, seeds: int) -> dict[str, Any] | None:
    """Normalized hypervolume of each arm at equal trials, per seed and on average, and its ratio to random."""
    rows: dict[str, list[float]] = {arm: [] for arm in ARMS}
    loose: dict[str, list[float]] = {arm: [] for arm in ARMS}
    trials: dict[str, list[int]] = {arm: [] for arm in ARMS}
    reference = None
    for arm in ARMS:
        for seed in range(seeds):
            name = f"compare-{arm}-{seed}"
            study = load_study(out, name)
            if study is None:
                continue
            reference = reference or parent_figures(out, name)[0]
            points = completed(study)
            rows[arm].append(round(hypervolume(points, reference, HV_REFERENCE), 4))
            loose[arm].append(round(hypervolume(points, reference, HV_REFERENCE_LOOSE), 4))
            trials[arm].append(len(points))
    ran = [arm for arm in ARMS if rows[arm]]
    if "random" not in ran or len(ran) < 2:
        return None
    mean = {k: statistics.mean(rows[k]) for k in ran}
    mean_loose = {k: statistics.mean(loose[k]) for k in ran}
    return {
        "reference_point": {"accuracy_drop_points": HV_REFERENCE[0] * 5, "size_x_float32": HV_REFERENCE[1],
                            "latency_x_float32": HV_REFERENCE[2]},
        "hypervolume": {k: rows[k] for k in ran}, "complete_trials": {k: trials[k] for k in ran}, "mean": mean,
        "ratio_over_random": {k: round(mean[k] / mean["random"], 3) if mean["random"] else None for k in ran},
        "loose_reference_point": {"accuracy_drop_points": HV_REFERENCE_LOOSE[0] * 5, "size_x_float32": HV_REFERENCE_LOOSE[1],
                                  "latency_x_float32": HV_REFERENCE_LOOSE[2]},
        "hypervolume_loose": {k: loose[k] for k in ran},
        "ratio_over_random_loose": {k: round(mean_loose[k] / mean_loose["random"], 3) if mean_loose["random"] else None for k in ran},
    }


def throughput_figures(out: Path) -> dict[str, Any]:
    """Trials per hour and overhead share of the post-training and training throughput studies."""
    figures: dict[str, Any] = {}
    walls = json.loads((out / "walls.json").read_text()) if (out / "walls.json").exists() else {}
    for method in ("ptq", "qat"):
        study = load_study(out, f"throughput-{method}")
        if study is None:
            continue
        timings = trial_timings(study)
        finished = len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")])
        loop_wall = _study_wall(study)
        figures[method] = {
            "finished_trials": finished,
            "trial_loop_wall_s": loop_wall,
            "trials_per_hour": round(finished / loop_wall * 3600) if loop_wall else None,
            "command_wall_s": walls.get(f"throughput-{method}"),
            "trials_per_hour_including_setup": round(finished / walls[f"throughput-{method}"] * 3600)
            if walls.get(f"throughput-{method}") else None,
            "overhead_share": _overhead(timings),
            "overhead_share_of_loop_wall": _study_overhead(study),
            "mean_phase_s": _mean_phases(timings),
        }
    return figures


def remeasure_latency(out: Path, name: str, fastest: int = 5, rounds: int = 3) -> dict[str, Any] | None:
    """Latency of the presets and the ``fastest`` trials at drop <= 1, re-measured side by side.

    Trials and presets were timed minutes apart while the machine's load changed; here every file is
    timed in the same rounds (interleaved, same protocol), and the median over rounds is reported.
    """
    view = load_view(out, name)
    if view is None:
        return None
    from litesweep.objectives.measure import LatencyProtocol, latency_ms

    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, run in {r.data.tags[TAG_PRESET]: r for r in reversed(view.preset_runs())}.items():
            files[f"preset {preset}"] = Path(view.download(run.info.run_id, TFLITE_FILE, tmp)).read_bytes()
        good = [r for r in view.records() if r.metrics and r.metrics["accuracy_drop"] <= DROP_BUDGET and r.run_id]
        for record in sorted(good, key=lambda r: r.metrics["latency_ms"])[:fastest]:
            assert record.run_id is not None
            files[f"trial {record.number}"] = Path(view.download(record.run_id, TFLITE_FILE, tmp)).read_bytes()
    from litesweep.objectives.runtime import open_interpreter

    rng = np.random.default_rng(0)
    samples = {label: rng.random(tuple(open_interpreter(tflite, threads=1, batch=1)[0].get_input_details()[0]["shape"][1:]),
                                 dtype=np.float32) for label, tflite in files.items()}
    timings: dict[str, list[float]] = {k: [] for k in files}
    for _ in range(rounds):
        for label, tflite in files.items():
            timings[label].append(latency_ms(tflite, samples[label], LatencyProtocol())[0])
    return {label: round(statistics.median(values), 4) for label, values in timings.items()}


# --- numbers you can pick by: test figures and confirmed latency ------------------------------------


def _gaps(rows: Sequence[dict[str, float]]) -> dict[str, Any] | None:
    """Mean validation minus test score over ``rows`` (in points; > 0: validation looked better than test),
    and the mean growth of the drop from validation to test (that gap net of the float reference's own)."""
    rows = [m for m in rows if TEST_METRIC_NAMES[0] in m]
    if not rows:
        return None
    gaps = [(m["accuracy"] - m["test_accuracy"]) * 100.0 for m in rows]
    drops = [m["test_accuracy_drop"] - m["accuracy_drop"] for m in rows]
    sd = statistics.stdev(gaps) if len(gaps) > 1 else None
    return {"n": len(gaps), "mean_points": round(statistics.mean(gaps), 3), "median_points": round(statistics.median(gaps), 3),
            "sd_points": round(sd, 3) if sd is not None else None,
            "se_points": round(sd / len(gaps) ** 0.5, 3) if sd is not None else None,
            "min_points": round(min(gaps), 3), "max_points": round(max(gaps), 3),
            "mean_test_drop_minus_val_drop_points": round(statistics.mean(drops), 3)}


def measure_all_on_test(out: Path, name: str, task: str, space: str) -> dict[str, Any] | None:
    """Measure every COMPLETE trial's ``model.tflite`` of study ``name`` on the test split.

    The Workbench is built as the sweep built it (the task's overrides, the same store and base-model cache),
    and checked against the study's fingerprint (base model, data and split, latency protocol) so the
    test split and float reference are the sweep's own.
    """
    view = load_view(out, name)
    if view is None:
        return None
    from optuna.trial import TrialState

    from litesweep.search.cli import compose_config
    from litesweep.search.config import CONF_DIR, register_configs
    from litesweep.search.workbench import build_workbench

    start = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per trial file otherwise
    register_configs()
    cfg = compose_config([*task_overrides(task, out), f"space={space}", *store_overrides(out)], CONF_DIR)
    bench, training = build_workbench(cfg)
    built = training["fingerprint"]
    recorded = view.study.user_attrs.get(FINGERPRINT_ATTR, {})
    differs = [k for k in built if recorded.get(k) != built[k]]
    if differs:
        raise SystemExit(f"benchmark: --test-all built a workbench that differs from study '{name}' in {differs}: "
                         f"study {[recorded.get(k) for k in differs]}, built {[built[k] for k in differs]}")
    tested: dict[int, dict[str, float]] = {}
    differences: list[float] = []
    attrs = view.study.user_attrs  # read once
    with tempfile.TemporaryDirectory() as tmp:
        for record in view.records((TrialState.COMPLETE,)):
            if record.run_id is None:
                continue
            path = Path(view.download(record.run_id, TFLITE_FILE, tmp))
            tested[record.number] = bench.measure_test(path.read_bytes())
            path.unlink()
            study_has = attrs.get(f"{CONFIRMED_ATTR_PREFIX}{record.number}", {})
            if TEST_METRIC_NAMES[0] in study_has:  # a front trial: the study measured it too; the two must agree
                differences.append(abs(study_has[TEST_METRIC_NAMES[0]] - tested[record.number][TEST_METRIC_NAMES[0]]))
    return {"figures": tested, "trials": len(tested), "base_model_cached": bool(training.get("cached")),
            "val_samples": len(bench.data.y_val), "test_samples": len(bench.data.y_test),
            "reference_test": bench.reference.test,
            "max_abs_difference_vs_study_on_front": max(differences) if differences else None,
            "compared_with_study": len(differences), "seconds": round(time.perf_counter() - start, 1)}


def picking_figures(out: Path, name: str, tested: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures a user picks by: the optimism of selecting on validation (front, and with ``--test-all``
    every COMPLETE trial), and the confirmed latency of the presets and the fastest front trial, all from
    the study's final confirmation (one run)."""
    view = load_view(out, name)
    if view is None or view.parent_run_id is None:
        return None
    study = view.study
    front = {t.number: figures_of(study, t) for t in view.front()}
    every = completed_by_number(study)
    reference = view.reference()
    presets = view.presets()
    ref_gap = ((reference["accuracy"] - reference["test_accuracy"]) * 100.0
               if "accuracy" in reference and "test_accuracy" in reference else None)
    optimism: dict[str, Any] = {
        "definition": "mean over models of (validation score - test score) x 100, in points; > 0: validation looked better",
        "front": _gaps(list(front.values())),
        "reference": {"val_accuracy": reference.get("accuracy"), "test_accuracy": reference.get("test_accuracy"),
                      "val_minus_test_points": round(ref_gap, 3) if ref_gap is not None else None},
        "all_trials": None, "non_front_trials": None,
    }
    if tested:
        with_test = {n: every[n] | tested["figures"][n] for n in every if n in tested["figures"]}
        optimism["all_trials"] = _gaps(list(with_test.values()))
        optimism["non_front_trials"] = _gaps([m for n, m in with_test.items() if n not in front])
        optimism["test_all"] = {k: v for k, v in tested.items() if k != "figures"}
        optimism["per_trial"] = {n: {"front": n in front, "accuracy": m["accuracy"], "test_accuracy": m["test_accuracy"],
                                     "accuracy_drop": m["accuracy_drop"], "test_accuracy_drop": m["test_accuracy_drop"]}
                                 for n, m in sorted(with_test.items())}
    if optimism["front"] and ref_gap is not None:
        optimism["front"]["minus_reference_gap_points"] = round(optimism["front"]["mean_points"] - ref_gap, 3)
    if optimism["front"] and optimism["all_trials"]:
        optimism["front_minus_all_trials_points"] = round(optimism["front"]["mean_points"] - optimism["all_trials"]["mean_points"], 3)

    def latency(m: dict[str, float]) -> dict[str, float] | None:
        return {"median": m[CONFIRMED], "low": m["latency_ms_low"], "high": m["latency_ms_high"]} if CONFIRMED in m else None

    timed_front = {n: m for n, m in front.items() if CONFIRMED in m}
    timed_presets = {p: m for p, m in presets.items() if CONFIRMED in m}
    confirmed: dict[str, Any] = {p: latency(presets[p]) if p in presets else None for p in LATENCY_PRESETS}
    confirmed["fastest_front_trial"] = None
    if timed_front:
        number = min(timed_front, key=lambda n: timed_front[n][CONFIRMED])
        fastest = timed_front[number]
        confirmed["fastest_front_trial"] = {"trial": number, **(latency(fastest) or {}), "accuracy_drop": fastest["accuracy_drop"],
                                            "test_accuracy_drop": fastest.get("test_accuracy_drop"), "size_bytes": fastest["size_bytes"]}
        if timed_presets:
            preset = min(timed_presets, key=lambda p: timed_presets[p][CONFIRMED])
            confirmed["fastest_preset"] = {"preset": preset, **(latency(timed_presets[preset]) or {})}
            confirmed["fastest_front_trial_vs_fastest_preset"] = _verdict(fastest, timed_presets[preset])
        if PRESET_FULL_INT8 in timed_presets:
            confirmed["fastest_front_trial_vs_full_int8"] = _verdict(fastest, timed_presets[PRESET_FULL_INT8])
        # The fastest front trial may be one no one would ship: the fastest within the drop budget beside it.
        usable = {n: m for n, m in timed_front.items() if m["accuracy_drop"] <= DROP_BUDGET}
        if usable:
            number = min(usable, key=lambda n: usable[n][CONFIRMED])
            good = usable[number]
            confirmed["fastest_front_trial_at_drop_le_1"] = {
                "trial": number, **(latency(good) or {}), "accuracy_drop": good["accuracy_drop"],
                "test_accuracy_drop": good.get("test_accuracy_drop"), "size_bytes": good["size_bytes"]}
            if timed_presets:
                confirmed["fastest_front_trial_at_drop_le_1_vs_fastest_preset"] = _verdict(good, timed_presets[preset])
    confirmed["rounds_from"] = "the study's final confirmation: front trials and presets timed side by side in shuffled rounds"
    missing = {  # what the product should have recorded and did not
        "front_without_test": [n for n, m in front.items() if TEST_METRIC_NAMES[0] not in m],
        "front_without_confirmed_latency": [n for n in front if n not in timed_front],
        "presets_without_test": [p for p, m in presets.items() if TEST_METRIC_NAMES[0] not in m],
        "presets_without_confirmed_latency": [p for p in presets if p not in timed_presets],
        "reference_without_test": "test_accuracy" not in reference,
    }
    return {"study": name, "front_size": len(front), "complete_trials": len(every), "optimism": optimism,
            "confirmed_latency_ms": confirmed, "missing": missing, "targets_on_test": targets_on_test(front, presets)}


def targets_on_test(front: dict[int, dict[str, float]], presets: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The issue's target figures, among front trials within ``DROP_BUDGET`` points of **test** drop (chosen
    on validation by the search; test only filters what is reported): the smallest vs ``full_int8``, the
    fastest (confirmed latency) vs the fastest preset, and which presets a front trial dominates or ties."""
    within = {n: m for n, m in front.items() if m.get("test_accuracy_drop", float("inf")) <= DROP_BUDGET}
    figures: dict[str, Any] = {"front_trials_within_test_budget": sorted(within)}
    int8 = presets.get(PRESET_FULL_INT8)
    if within and int8:
        n = min(within, key=lambda k: within[k]["size_bytes"])
        figures["smallest"] = {"trial": n, "size_bytes": within[n]["size_bytes"], "test_accuracy_drop": within[n]["test_accuracy_drop"],
                               "size_vs_full_int8": round(int8["size_bytes"] / within[n]["size_bytes"], 2)}
    timed = {n: m for n, m in within.items() if CONFIRMED in m}
    timed_presets = {p: m for p, m in presets.items() if CONFIRMED in m}
    if timed and timed_presets:
        n = min(timed, key=lambda k: timed[k][CONFIRMED])
        preset = min(timed_presets, key=lambda p: timed_presets[p][CONFIRMED])
        figures["fastest"] = {"trial": n, CONFIRMED: timed[n][CONFIRMED], "fastest_preset": preset,
                              "speed_vs_fastest_preset": round(timed_presets[preset][CONFIRMED] / timed[n][CONFIRMED], 2),
                              "verdict": _verdict(timed[n], timed_presets[preset])}
    figures["presets_dominated_or_tied"] = {
        p: [n for n, m in front.items() if pareto.dominates_or_equals(m, v, OBJECTIVES)] for p, v in presets.items()}
    return figures


# --- running ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="fashion_mnist", choices=("fashion_mnist", "cifar10", "cifar10_resnet8", "default"))
    parser.add_argument("--phases", nargs="+", default=["search", "compare", "throughput"],
                        choices=("search", "compare", "throughput", "report"))
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of the search phase")
    parser.add_argument("--trials", type=int, default=40, help="trials per study in compare and throughput")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per sampler in compare")
    parser.add_argument("--space", default="full", help="search space of the search and compare phases (conf/space/)")
    parser.add_argument("--max-drop", type=float, default=None,
                        help="search phase: study.constraints accuracy_drop bound (points), so the sampler models feasibility")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="samplers compared")
    parser.add_argument("--remeasure", action="store_true", help="report: re-time presets and the fastest trials side by side")
    parser.add_argument("--test-all", action="store_true",
                        help="report: measure every COMPLETE search trial on the test split (benchmark only; the search "
                             "measures only front trials there), for the optimism over all trials")
    parser.add_argument("--cpus", default=None, help="taskset CPU list for every litesweep process (e.g. 0)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/<task>)")
    args = parser.parse_args()
    if args.minutes <= 0 or args.trials < 1 or args.seeds < 1:
        raise SystemExit(f"benchmark: --minutes {args.minutes}, --trials {args.trials}, --seeds {args.seeds}: accepted: > 0, >= 1, >= 1")
    out = (args.out or ROOT / "benchmarks" / "results" / args.task).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = task_overrides(args.task, out)
    searched = [*base, f"space={args.space}"]
    walls_file = out / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}

    def record(name: str, wall: float) -> None:
        walls[name] = round(wall, 1)
        walls_file.write_text(json.dumps(walls, indent=2))

    if "search" in args.phases:
        constraint = [f"study.constraints={{accuracy_drop:{args.max_drop}}}"] if args.max_drop is not None else []
        record("search", litesweep(out, [*searched, *constraint, "study.name=search", "study.n_trials=100000",
                                         f"study.timeout_s={args.minutes * 60}"], "search", args.cpus))
    if "compare" in args.phases:
        for seed in range(args.seeds):
            for arm in args.arms:
                name = f"compare-{arm}-{seed}"
                record(name, litesweep(out, [*searched, *ARMS[arm], f"study.name={name}", f"study.seed={seed}",
                                             f"study.n_trials={args.trials}", "study.presets=false"], name, args.cpus))
    if "throughput" in args.phases:
        for method, space in (("ptq", "space=ptq"), ("qat", "space=default")):
            name = f"throughput-{method}"
            record(name, litesweep(out, [*base, space, f"study.name={name}", f"study.n_trials={args.trials}",
                                         "study.presets=false"], name, args.cpus))
    write_report(out, args)


def write_report(out: Path, args: argparse.Namespace) -> None:
    """Write ``report.json`` and ``report.md`` from the task's stores, and print the markdown."""
    tested = measure_all_on_test(out, "search", args.task, args.space) if args.test_all else None
    report = {
        "task": args.task,
        "command": shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "targets": {"drop_budget_points": DROP_BUDGET, "size_vs_full_int8": 3.0, "latency_vs_full_int8": 1.0,
                    "gzip_vs_float32": 25.0, "hv_ratio": 1.1, "ptq_trials_per_hour": 2000, "qat_trials_per_hour": 300,
                    "overhead_share_qat": 0.05, "overhead_share_ptq": 0.30},
        "search": search_figures(out, "search", tested["figures"] if tested else None),
        "numbers_you_can_pick_by": picking_figures(out, "search", tested),
        "compare": compare_figures(out, args.seeds),
        "throughput": throughput_figures(out),
        "latency_side_by_side_ms": remeasure_latency(out, "search") if args.remeasure else None,
        "walls_s": json.loads((out / "walls.json").read_text()) if (out / "walls.json").exists() else {},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = render(report)
    (out / "report.md").write_text(markdown)
    print(markdown)
    print(f"written: {out / 'report.json'}, {out / 'report.md'}")


def render(report: dict[str, Any]) -> str:
    """The report as markdown."""
    lines = [f"# litesweep benchmark: {report['task']}", "", f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']['cpus']} CPUs, Python {report['machine']['python']}", ""]
    s = report["search"]
    if s:
        f32 = s["float32"]
        test = f", test {f32['test_accuracy']:.4f}" if f32.get("test_accuracy") is not None else ""
        lines += ["## Search (default sampler, wall-time budget) vs presets", "",
                  f"{s['finished_trials']} trials finished in {s['search_wall_s']} s. Float reference: accuracy "
                  f"{f32['accuracy']:.4f} (validation){test}, {f32['size_bytes']:.0f} B ({f32['size_gzip_bytes']:.0f} B gzip), "
                  f"{f32['latency_ms']:.3f} ms; base model trained {s['base_model_epochs']:.0f} epochs to a validation plateau.", "",
                  "Models are chosen on the validation split (val drop); test figures (Wilson 95%) and the latency re-timed "
                  "side by side at the end of the run (median [lowest, highest] round) are shown beside, never chosen by. "
                  f"Fastest chosen by {s.get('best_latency_chosen_by')}.", "",
                  "| model | val accuracy | val drop (points) | test accuracy [95%] | test drop | size B | gzip B | latency ms (search) "
                  "| latency ms confirmed [range] |", "|---|---|---|---|---|---|---|---|---|"]
        rows = [(f"preset {k}", v) for k, v in sorted(s["presets"].items())]
        rows += [(f"{label} (trial {s[key].get('trial')})", s[key])
                 for label, key in (("front: smallest at drop <= 1", "best_size_at_drop_le_1"),
                                    ("front: fastest at drop <= 1", "best_latency_at_drop_le_1"),
                                    ("front: smallest gzip at drop <= 1", "best_gzip_at_drop_le_1")) if s[key]]
        for label, m in rows:
            lines.append(f"| {label} | {m['accuracy']:.4f} | {m['accuracy_drop']:.2f} | {_test_cell(m)} | "
                         f"{_num(m.get('test_accuracy_drop'), '.2f')} | {m['size_bytes']:.0f} | {m['size_gzip_bytes']:.0f} | "
                         f"{m['latency_ms']:.3f} | {_latency_cell(m)} |")
        verdict = s.get("latency_vs_full_int8_verdict")
        speed = (f"**{verdict}** (median ratio {s.get('latency_vs_full_int8')}x)" if verdict
                 else f"**{s.get('latency_vs_full_int8')}x** as fast")
        lines += ["", f"- smallest front model at drop <= 1 vs full int8: **{s.get('size_vs_full_int8')}x** smaller (target 3x)",
                  f"- fastest front model at drop <= 1 vs full int8: {speed}, from {s.get('latency_vs_full_int8_from')} "
                  "(target >= 1x)",
                  f"- smallest gzip at drop <= 1 vs float32 gzip: **{s.get('gzip_vs_float32')}x** smaller (target 25x)",
                  f"- vs the best preset at drop <= 1 ({s['best_preset_at_drop_le_1']}): {s.get('size_vs_best_preset')}x smaller",
                  f"- every preset dominated (accuracy, size, latency): **{s['every_preset_dominated']}** {s['preset_dominated']}",
                  f"- every preset dominated or equalled on (accuracy, size): **{s.get('every_preset_dominated_on_accuracy_size')}** "
                  f"{s.get('preset_dominated_on_accuracy_size')}",
                  f"- overhead share of trial wall time: {s['overhead_share']} (of the whole trial loop, between-trial work "
                  f"included: {s['overhead_share_of_loop_wall']}); mean phase seconds {s['mean_phase_s']}", ""]
    lines += render_picking(report.get("numbers_you_can_pick_by"))
    c = report["compare"]
    if c:
        ref = c["reference_point"]
        lines += ["## Default sampler (TPE) vs RandomSampler, same space and trial budget", "",
                  f"Normalized hypervolume: objectives accuracy drop / 5 points, size / float32 size, latency / float32 latency; "
                  f"reference point ({ref['accuracy_drop_points']} points, {ref['size_x_float32']}x size, "
                  f"{ref['latency_x_float32']}x latency); "
                  "value = dominated share of that box.", "",
                  "| arm | per seed | mean | ratio to random | complete trials | loose ref: per seed | loose ratio |",
                  "|---|---|---|---|---|---|---|"]
        for arm in c["hypervolume"]:
            lines.append(f"| {arm} | {c['hypervolume'][arm]} | {c['mean'][arm]:.4f} | **{c['ratio_over_random'][arm]}** | "
                         f"{c['complete_trials'][arm]} | {c['hypervolume_loose'][arm]} | {c['ratio_over_random_loose'][arm]} |")
        lines += ["", f"Target: default sampler (tpe) / random >= 1.1. Loose reference point: {c['loose_reference_point']}.", ""]
    t = report["throughput"]
    if t:
        lines += ["## Throughput", "", "| method | trials | trials/hour (trial loop) | trials/hour (incl. setup) | overhead share "
                  "(of trial wall) | overhead share (of loop wall) | mean phase s |", "|---|---|---|---|---|---|---|"]
        for method, m in t.items():
            lines.append(f"| {method} | {m['finished_trials']} | {m['trials_per_hour']} | {m['trials_per_hour_including_setup']} | "
                         f"{m['overhead_share']} | {m['overhead_share_of_loop_wall']} | {m['mean_phase_s']} |")
        lines += ["", "Targets (default model): ptq >= 2,000/h, qat >= 300/h; overhead share <= 30% (ptq), <= 5% (qat).", ""]
    if report.get("latency_side_by_side_ms"):
        lines += ["## Latency re-measured side by side", "", "Presets and the fastest trials at drop <= 1, timed in the same "
                  "interleaved rounds (same protocol, median of 3 rounds), so load changes during the search do not bias them:", "",
                  "| model | latency ms |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["latency_side_by_side_ms"].items()] + [""]
    lines += [f"Wall seconds per command: {report['walls_s']}", ""]
    return "\n".join(lines)


def _num(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def _test_cell(m: dict[str, Any]) -> str:
    if m.get("test_accuracy") is None:
        return "-"
    return f"{m['test_accuracy']:.4f} [{m['test_accuracy_low']:.4f}, {m['test_accuracy_high']:.4f}]"


def _latency_cell(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    if "median" in m:
        return f"{m['median']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"
    if m.get(CONFIRMED) is None:
        return "-"
    return f"{m[CONFIRMED]:.4f} [{m['latency_ms_low']:.4f}, {m['latency_ms_high']:.4f}]"


def _gap_line(label: str, g: dict[str, Any] | None, missing: str) -> str:
    if not g:
        return f"- {label}: {missing}"
    spread = f", sd {g['sd_points']}, se {g['se_points']}" if g.get("sd_points") is not None else ""
    return (f"- {label}: **{g['mean_points']:+.2f} points** (n = {g['n']}; median {g['median_points']:+.2f}, "
            f"range [{g['min_points']:+.2f}, {g['max_points']:+.2f}]{spread}); drop grows from validation to test by "
            f"{g['mean_test_drop_minus_val_drop_points']:+.2f} points on average")


def render_picking(p: dict[str, Any] | None) -> list[str]:
    """The "Numbers you can pick by" section."""
    if not p:
        return []
    o, c = p["optimism"], p["confirmed_latency_ms"]
    ref = o["reference"]
    t = p.get("targets_on_test") or {}
    lines = ["## Targets (front trials within 1 point of test drop)", ""]
    if t.get("smallest"):
        lines.append(f"- smallest: trial {t['smallest']['trial']}, {t['smallest']['size_bytes']:,.0f} B, test drop "
                     f"{t['smallest']['test_accuracy_drop']:.2f}: **{t['smallest']['size_vs_full_int8']}x** smaller than full_int8")
    if t.get("fastest"):
        f = t["fastest"]
        lines.append(f"- fastest: trial {f['trial']}, {f[CONFIRMED]:.4f} ms confirmed: **{f['speed_vs_fastest_preset']}x** the speed "
                     f"of the fastest preset ({f['fastest_preset']}); side by side: {f['verdict']}")
    if "presets_dominated_or_tied" in t:
        lines.append("- presets dominated or tied within noise (validation accuracy, size, confirmed latency) by any front trial: "
                     + ", ".join(f"{k}: {v[:5] or 'no'}" for k, v in t["presets_dominated_or_tied"].items()))
    lines += ["", "## Numbers you can pick by", "",
             f"Study `{p['study']}`: {p['complete_trials']} COMPLETE trials, {p['front_size']} on the final front. The search "
             "selects on the validation split; the test split is measured only for reporting. Optimism = mean of "
             "(validation score - test score), in points: how much better the numbers that chose a model look than the "
             "same models on unseen data.", ""]
    if ref.get("val_minus_test_points") is not None:
        lines.append(f"- float reference (not selected): validation {ref['val_accuracy']:.4f}, test {ref['test_accuracy']:.4f}: "
                     f"validation - test = {ref['val_minus_test_points']:+.2f} points (the split's own difference, no selection)")
    lines.append(_gap_line("optimism over the front", o["front"], "no front trial has test figures"))
    if o["front"] and "minus_reference_gap_points" in o["front"]:
        beyond = o["front"]["minus_reference_gap_points"]
        lines.append(f"- front optimism beyond the float reference's split difference: {beyond:+.2f} points")
    lines.append(_gap_line("optimism over all COMPLETE trials", o["all_trials"], "not measured (run the report with --test-all)"))
    if o.get("non_front_trials"):
        lines.append(_gap_line("optimism over the non-front trials", o["non_front_trials"], "-"))
    if o.get("front_minus_all_trials_points") is not None:
        lines.append(f"- selection effect (front - all trials): {o['front_minus_all_trials_points']:+.2f} points")
    t = o.get("test_all")
    if t:
        lines.append(f"- --test-all: {t['trials']} trials measured on the test split ({t['test_samples']} samples; validation "
                     f"{t['val_samples']}) in {t['seconds']} s, base model from the sweep's cache: {t['base_model_cached']}; "
                     f"largest difference from the study's own test figures on the {t['compared_with_study']} trials it measured "
                     f"(every trial that reached the front at some point): {t['max_abs_difference_vs_study_on_front']}")
    lines += ["", "Latency re-timed side by side at the end of the run (the study's final confirmation; median of round "
              "medians [lowest, highest round]):", "", "| model | latency ms confirmed [range] | val drop | test drop |",
              "|---|---|---|---|"]
    for preset in LATENCY_PRESETS:
        lines.append(f"| preset {preset} | {_latency_cell(c.get(preset))} | | |")
    for label, key in (("fastest front trial", "fastest_front_trial"),
                       ("fastest front trial at drop <= 1", "fastest_front_trial_at_drop_le_1")):
        if c.get(key):
            m = c[key]
            lines.append(f"| {label} ({m['trial']}) | {_latency_cell(m)} | {m['accuracy_drop']:.2f} | "
                         f"{_num(m.get('test_accuracy_drop'), '.2f')} |")
    lines.append("")
    f = c.get("fastest_front_trial")
    if f and c.get("fastest_preset"):
        fp = c["fastest_preset"]
        lines.append(f"- fastest front trial {f['trial']} vs the fastest preset ({fp['preset']}, {_latency_cell(fp)}): "
                     f"**{c['fastest_front_trial_vs_fastest_preset']}** (\"Nx as fast\" only when the ranges do not overlap)")
    if f and c.get("fastest_front_trial_vs_full_int8"):
        lines.append(f"- fastest front trial {f['trial']} vs full_int8: **{c['fastest_front_trial_vs_full_int8']}**")
    g = c.get("fastest_front_trial_at_drop_le_1")
    if g and c.get("fastest_front_trial_at_drop_le_1_vs_fastest_preset"):
        lines.append(f"- fastest front trial at drop <= 1 ({g['trial']}) vs the fastest preset: "
                     f"**{c['fastest_front_trial_at_drop_le_1_vs_fastest_preset']}**")
    gaps = {k: v for k, v in p["missing"].items() if v}
    lines += [f"- missing from the stores: {gaps if gaps else 'nothing'}", ""]
    return lines


if __name__ == "__main__":
    main()
