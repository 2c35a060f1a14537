"""Per-layer sensitivity: degrade one unit at a time and record the accuracy drop.

Used to report which layers matter, to narrow the search space, or to seed the first trial.
The result is stored on the study (user attribute), so a resumed study does not redo it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import optuna

from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy, parse_recipe
from litesweep.search.ledger import SENSITIVITY_ATTR
from litesweep.search.space import FloatRange, SearchSpace, UnitSpace
from litesweep.search.tracking import Tracker


def degraded_policy(space: SearchSpace, unit_name: str) -> Policy:
    """Every layer float except ``unit_name``'s layers: lowest bit width and highest sparsity of the space."""
    layers = {name: LayerPolicy() for name in space.layer_names}
    unit = next(u for u in space.units if u.name == unit_name)
    quant = _lowest(unit, space.method)
    sparsity = unit.sparsity.high if space.method != "ptq" else 0.0
    for name in unit.layers:
        layers[name] = LayerPolicy(sparsity=sparsity, **quant)
    return Policy(layers, DistillPolicy(), method=space.method)


def _lowest(unit: UnitSpace, method: str) -> dict[str, Any]:
    """The most compressed weight setting of a unit: its lowest bits (or its lowest-bit recipe)."""
    if method == "qat":
        return {"bits": min(unit.bits)}
    return min((parse_recipe(r) for r in unit.recipes), key=lambda q: q["bits"])


def measure_sensitivity(bench: Any, space: SearchSpace, study: optuna.Study) -> dict[str, float]:
    """Accuracy drop (points) of each unit degraded alone; cached in the study."""
    cached = study.user_attrs.get(SENSITIVITY_ATTR)
    if cached and set(cached) == {u.name for u in space.units}:
        return dict(cached)
    drops = {u.name: float(bench.run(degraded_policy(space, u.name)).metrics.accuracy_drop) for u in space.units}
    study.set_user_attr(SENSITIVITY_ATTR, drops)
    return drops


def narrow(space: SearchSpace, drops: dict[str, float], insensitive: float, sensitive: float) -> SearchSpace:
    """Freeze insensitive units at their most compressed choice; keep sensitive ones off the lowest bits."""
    for unit in space.units:
        drop = drops[unit.name]
        lowest = _lowest(unit, space.method)["bits"]
        recipe_bits = {r: parse_recipe(r)["bits"] for r in unit.recipes}
        if drop <= insensitive:
            space = space.restrict(unit.name, bits=(lowest,), recipes=tuple(r for r, b in recipe_bits.items() if b == lowest),
                                   sparsity=FloatRange(unit.sparsity.high, unit.sparsity.high))
        elif drop >= sensitive:
            bits = tuple(b for b in unit.bits if b != lowest) or unit.bits
            recipes = tuple(r for r, b in recipe_bits.items() if b != lowest) or unit.recipes
            high = unit.sparsity.low + (unit.sparsity.high - unit.sparsity.low) / 2
            space = space.restrict(unit.name, bits=bits, recipes=recipes, sparsity=dataclasses.replace(unit.sparsity, high=high))
    return space


def seed_params(space: SearchSpace, drops: dict[str, float], insensitive: float) -> dict[str, Any]:
    """Parameters of a first trial: insensitive units compressed most, the others at 8 bits, unpruned."""
    params: dict[str, Any] = {}
    for unit in space.units:
        low = drops[unit.name] <= insensitive
        if space.method == "qat" and len(unit.bits) > 1:
            params[f"bits.{unit.name}"] = min(unit.bits) if low else (8 if 8 in unit.bits else max(unit.bits))
        if space.method != "qat" and len(unit.recipes) > 1:
            by_bits = sorted(unit.recipes, key=lambda r: parse_recipe(r)["bits"])
            eight = [r for r in unit.recipes if parse_recipe(r)["bits"] == 8]
            params[f"recipe.{unit.name}"] = by_bits[0] if low else (eight[0] if eight else by_bits[-1])
        if unit.sparsity.low != unit.sparsity.high:
            params[f"sparsity.{unit.name}"] = unit.sparsity.high if low else unit.sparsity.low
    return params


def log_report(tracker: Tracker, drops: dict[str, float]) -> None:
    """``sensitivity.csv`` and ``sensitivity.png`` on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["unit", "accuracy_drop_points"])
    for name, drop in drops.items():
        writer.writerow([name, f"{drop:.4f}"])
    fig, ax = plt.subplots(figsize=(max(4, len(drops) * 0.9), 3))
    ax.bar(list(drops), list(drops.values()), color="tab:red")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title("Sensitivity: one unit at its lowest bits and highest sparsity")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    tracker.log_study_files({"sensitivity.csv": buffer.getvalue(), "sensitivity.png": png.getvalue()})
    tracker.log_study_metrics({f"sensitivity.{k}": v for k, v in drops.items()})
