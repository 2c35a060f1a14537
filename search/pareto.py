"""The study's Pareto front, as trials and as a console table."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import optuna

from litesweep.search.ledger import METRICS_ATTR, RUN_ID_ATTR


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Pareto-optimal COMPLETE trials, by trial number (Optuna's own non-dominated sort)."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


class FrontKeeper:
    """The study's front kept trial by trial: each ``update`` compares only the trials completed since the last
    one with the current front. The same set as ``front`` (Optuna's sort: feasible trials, identical values all
    kept), at a cost that does not grow with the study.
    """

    def __init__(self, directions: Sequence[optuna.study.StudyDirection]) -> None:
        self._signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions]
        self._front: dict[int, tuple[tuple[float, ...], optuna.trial.FrozenTrial]] = {}
        self._seen: set[int] = set()

    def update(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The front after the trials completed since the last call (of any worker), by trial number."""
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if trial.number in self._seen:
                continue
            self._seen.add(trial.number)
            if trial.values is None or any(c > 0 for c in trial.constraints.values()):
                continue
            loss = tuple(s * v for s, v in zip(self._signs, trial.values, strict=True))
            if any(_dominates(other, loss) for other, _ in self._front.values()):
                continue
            self._front = {n: kept for n, kept in self._front.items() if not _dominates(loss, kept[0])}
            self._front[trial.number] = (loss, trial)
        return [trial for _, (_, trial) in sorted(self._front.items())]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` in every (minimized) objective and better in one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


#: Spread keys of a metric measured in interleaved rounds: compared by their ranges, not their medians.
SPREADS = {"latency_ms": ("latency_ms_low", "latency_ms_high")}


def compare(a: Mapping[str, float], b: Mapping[str, float], metric: str, direction: str) -> int:
    """1 when ``a`` is better on ``metric``, -1 when worse, 0 for a tie.

    Latency confirmed in rounds (``latency_ms_low``/``_high``: the range of round medians) is a tie while the
    ranges overlap: a difference inside the noise is not a difference. A file never re-timed has its one
    reading as its range.
    """
    low, high = SPREADS.get(metric, ("", ""))
    if low in a or low in b:
        (a_low, a_high), (b_low, b_high) = ((m.get(low, m[metric]), m.get(high, m[metric])) for m in (a, b))
        return 1 if a_high < b_low else -1 if b_high < a_low else 0
    if a[metric] == b[metric]:
        return 0
    return 1 if (a[metric] > b[metric]) == (direction == "maximize") else -1


def dominates(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """``a`` is no worse than ``b`` on every objective in ``directions`` and better on at least one."""
    order = [compare(a, b, k, d) for k, d in directions.items()]
    return min(order) >= 0 and max(order) == 1


def dominates_or_equals(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """``a`` dominates ``b`` on ``directions``, or ties it on every one of them."""
    return all(compare(a, b, k, d) >= 0 for k, d in directions.items())


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
    figures: Mapping[int, Mapping[str, float]] | None = None,
) -> str:
    """A plain-text table, smallest file first, below the float reference and presets.

    Validation figures (what the search selected by) and test figures (reported, never selected by)
    are labelled apart; latency is the confirmed median with its range of round medians when confirmed.
    ``figures``: each trial's figures by number (default: its ``metrics`` attribute).
    """
    header = ("trial", *(label for label, _ in COLUMNS), "mlflow run")
    rows = []
    if reference:
        rows.append(("float32", *_cells(reference), "(reference)"))
    for name, metrics in (presets or {}).items():
        rows.append((name, *_cells(metrics), "(preset)"))
    found = {t.number: dict((figures or {}).get(t.number) or t.user_attrs.get(METRICS_ATTR, {})) for t in trials}
    for t in sorted(trials, key=lambda t: found[t.number].get("size_bytes", 0)):
        rows.append((str(t.number), *_cells(found[t.number]), t.user_attrs.get(RUN_ID_ATTR, "-")))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(m: Mapping[str, float]) -> list[str]:
    return [cell(m) for _, cell in COLUMNS]


def number_cell(key: str, form: str) -> Callable[[Mapping[str, float]], str]:
    """A table cell: ``m[key]`` formatted with ``form``, or ``-`` when the row lacks it."""
    return lambda m: "-" if m.get(key) is None else format(m[key], form)


def _range(low: str, high: str, form: str) -> Callable[[Mapping[str, float]], str]:
    return lambda m: "-" if m.get(low) is None else f"[{m[low]:{form}}, {m[high]:{form}}]"


def _latency(m: Mapping[str, float]) -> str:
    value = m.get("latency_ms_confirmed", m.get("latency_ms"))
    return "-" if value is None else f"{value:.4f}"


#: (header, cell) of each column of the front table.
COLUMNS: tuple[tuple[str, Callable[[Mapping[str, float]], str]], ...] = (
    ("val_accuracy", number_cell("accuracy", ".4f")),
    ("val_drop", number_cell("accuracy_drop", ".2f")),
    ("test_accuracy", number_cell("test_accuracy", ".4f")),
    ("test_95%", _range("test_accuracy_low", "test_accuracy_high", ".4f")),
    ("test_drop", number_cell("test_accuracy_drop", ".2f")),
    ("size_bytes", number_cell("size_bytes", ",.0f")),
    ("ratio", number_cell("compression_ratio", ".2f")),
    ("gzip_bytes", number_cell("size_gzip_bytes", ",.0f")),
    ("latency_ms", _latency),
    ("latency_range", _range("latency_ms_low", "latency_ms_high", ".4f")),
    ("ideal_bytes", number_cell("ideal_bytes", ",.0f")),
)
