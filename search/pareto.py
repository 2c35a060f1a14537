"""The study's Pareto front, as trials and as a console table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna

from litesweep.objectives.metrics import METRIC_NAMES
from litesweep.search.ledger import METRICS_ATTR, RUN_ID_ATTR

TABLE_COLUMNS = ("accuracy", "accuracy_drop", "size_bytes", "compression_ratio", "size_gzip_bytes", "latency_ms", "ideal_bytes")


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Pareto-optimal COMPLETE trials, by trial number (Optuna's own non-dominated sort)."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


def dominates(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """``a`` is no worse than ``b`` on every objective in ``directions`` and better on at least one."""
    no_worse = all(a[k] >= b[k] if d == "maximize" else a[k] <= b[k] for k, d in directions.items())
    return no_worse and any(a[k] != b[k] for k in directions)


def dominates_or_equals(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """``a`` dominates ``b`` on ``directions``, or ties it on every one of them."""
    return dominates(a, b, directions) or all(a[k] == b[k] for k in directions)


def non_dominated(rows: Sequence[Mapping[str, float]], directions: Mapping[str, str]) -> list[Mapping[str, float]]:
    """The rows no other row dominates, in their given order (for metrics that are not in a study)."""
    return [r for r in rows if not any(dominates(o, r, directions) for o in rows if o is not r)]


def front_run_ids(trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    """MLflow run ids of trials (each trial stores its run id as a user attribute)."""
    return [t.user_attrs[RUN_ID_ATTR] for t in trials if RUN_ID_ATTR in t.user_attrs]


def format_table(
    trials: Sequence[optuna.trial.FrozenTrial],
    reference: Mapping[str, float] | None = None,
    presets: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """A plain-text table of trials' metrics, smallest file first, below the float reference and presets."""
    header = ("trial", *TABLE_COLUMNS, "mlflow run")
    rows = []
    if reference:
        rows.append(("float32", *(_fmt(c, reference.get(c)) for c in TABLE_COLUMNS), "(reference)"))
    for name, metrics in (presets or {}).items():
        rows.append((name, *(_fmt(c, metrics.get(c)) for c in TABLE_COLUMNS), "(preset)"))
    for t in sorted(trials, key=lambda t: t.user_attrs.get(METRICS_ATTR, {}).get("size_bytes", 0)):
        metrics = t.user_attrs.get(METRICS_ATTR, {})
        rows.append((str(t.number), *(_fmt(c, metrics.get(c)) for c in TABLE_COLUMNS), t.user_attrs.get(RUN_ID_ATTR, "-")))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    if column in ("size_bytes", "size_gzip_bytes", "ideal_bytes"):
        return f"{int(value):,}"
    if column == "accuracy":
        return f"{value:.4f}"
    if column == "latency_ms":
        return f"{value:.4f}"
    return f"{value:.2f}"


assert set(TABLE_COLUMNS) <= set(METRIC_NAMES)
