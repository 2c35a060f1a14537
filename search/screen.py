"""Multi-fidelity: cheap post-training trials choose which bit mixtures get trained first.

Before a training (``qat``) study's first trial, ``screen.trials`` random per-unit bit mixtures are
quantized post-training (seconds each, no training) and measured. Of the mixtures within
``screen.max_drop`` accuracy points, those on the cheap front (accuracy, size, latency) are enqueued,
spread from smallest to largest, as the study's first training trials; the sampler fills in the other
parameters. The result is stored on the study
(user attribute), so a resumed study does not redo it, and logged as ``screen.csv`` on the parent run.
"""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import optuna

from litesweep.objectives.policy import FLOAT_BITS, DistillPolicy, LayerPolicy, Policy, parse_recipe
from litesweep.search import pareto
from litesweep.search.ledger import SCREEN_ATTR
from litesweep.search.space import SearchSpace
from litesweep.search.tracking import Tracker


def proxy_recipe(bits: int, supported: set[str]) -> str | None:
    """The post-training recipe that stands in for ``bits`` of quantization-aware training.

    QAT layers run with int8 activations, so static (full-integer) recipes come first; ``None`` when the
    layer's op accepts no recipe at those bits (e.g. 2-bit convolutions).
    """
    if bits == FLOAT_BITS:
        return "float"
    for recipe in (f"static_w{bits}a8", f"dynamic_w{bits}", f"weight_only_w{bits}"):
        if recipe in supported:
            return recipe
    return None


def _candidates(space: SearchSpace, supported: dict[str, set[str]], n: int, seed: int) -> list[dict[str, int]]:
    """``n`` distinct random bit mixtures (unit -> bits) that have a post-training stand-in for every layer."""
    choices = {u.name: [b for b in u.bits if all(proxy_recipe(b, supported[layer]) for layer in u.layers)] for u in space.units}
    choices = {name: bits for name, bits in choices.items() if bits}
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    mixtures: list[dict[str, int]] = []
    for _ in range(n * 20):
        if len(mixtures) == n:
            break
        mixture = {name: rng.choice(bits) for name, bits in choices.items()}
        key = tuple(mixture.values())
        if key not in seen:
            seen.add(key)
            mixtures.append(mixture)
    return mixtures


def _policy(space: SearchSpace, mixture: dict[str, int], supported: dict[str, set[str]]) -> Policy:
    layers = {name: LayerPolicy() for name in space.layer_names}
    for unit in space.units:
        if unit.name in mixture:
            for layer in unit.layers:
                layers[layer] = LayerPolicy(**parse_recipe(proxy_recipe(mixture[unit.name], supported[layer]) or "float"))
    return Policy(layers, DistillPolicy(), method="ptq")


def screen(bench: Any, space: SearchSpace, study: optuna.Study, n_trials: int, n_seeds: int, seed: int,
           directions: dict[str, str], max_drop: float = 5.0) -> list[dict[str, Any]]:
    """Measure ``n_trials`` post-training mixtures; return the rows (mixture, metrics, on the cheap front).

    Only mixtures within ``max_drop`` accuracy points post-training are candidates: training recovers
    some accuracy, but a mixture that collapses without it (e.g. a 2-bit layer) is not worth training first.

    Cached on the study: a resumed study reads the rows back.
    """
    cached = study.user_attrs.get(SCREEN_ATTR)
    if cached is not None:
        return list(cached)
    supported = bench.ptq_recipes()
    rows: list[dict[str, Any]] = []
    for mixture in _candidates(space, supported, n_trials, seed):
        metrics = bench.run(_policy(space, mixture, supported)).metrics.as_dict()
        rows.append({"bits": mixture, **{k: metrics[k] for k in ("accuracy", "accuracy_drop", "size_bytes", "latency_ms")}})
    candidates = [r for r in rows if r["accuracy_drop"] <= max_drop]
    front = sorted(pareto.non_dominated(candidates, directions), key=lambda r: r["size_bytes"])
    step = max(1, len(front) / max(1, n_seeds))
    chosen = {id(front[int(i * step)]) for i in range(min(n_seeds, len(front)))}
    for row in rows:
        row["front"] = any(row is f for f in front)  # the cheap front of the candidates
        row["enqueued"] = id(row) in chosen
    study.set_user_attr(SCREEN_ATTR, rows)
    return rows


def enqueue(study: optuna.Study, rows: list[dict[str, Any]]) -> int:
    """Enqueue the chosen mixtures as the first training trials (only the bits; the sampler picks the rest)."""
    chosen = sorted((r for r in rows if r.get("enqueued")), key=lambda r: r["size_bytes"])
    for row in chosen:
        study.enqueue_trial({f"bits.{unit}": bits for unit, bits in row["bits"].items()}, skip_if_exists=True)
    return len(chosen)


def log_report(tracker: Tracker, rows: list[dict[str, Any]]) -> None:
    """``screen.csv`` on the parent run: every post-training mixture, its metrics, front and enqueued flags."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    units = sorted({u for r in rows for u in r["bits"]})
    writer.writerow([*(f"bits.{u}" for u in units), "accuracy", "accuracy_drop", "size_bytes", "latency_ms", "front", "enqueued"])
    for r in rows:
        writer.writerow([*(r["bits"].get(u, "") for u in units), f"{r['accuracy']:.4f}", f"{r['accuracy_drop']:.3f}",
                         int(r["size_bytes"]), f"{r['latency_ms']:.4f}", r["front"], r["enqueued"]])
    tracker.log_study_files({"screen.csv": buffer.getvalue()})
    tracker.log_study_metrics({"screen.trials": len(rows), "screen.enqueued": sum(r["enqueued"] for r in rows)})
