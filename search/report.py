"""The study report on the parent run: Pareto plots (HTML and PNG), hypervolume history, parameter
importances, the per-layer view of the front's policies, and ``trials.csv``.

Uses Optuna's and plotly's own plotting where they do the job; matplotlib draws the PNGs (plotly's
PNG export needs a browser binary of its own).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from litesweep.objectives.metrics import CONFIRMED_LATENCY_NAMES, TEST_METRIC_NAMES
from litesweep.search import pareto
from litesweep.search.ledger import CONFIRMED_ATTR_PREFIX, FEASIBLE_ATTR, METRICS_ATTR, POLICY_ATTR, RUN_ID_ATTR

log = logging.getLogger(__name__)
#: Above this many COMPLETE trials, the importance and hypervolume plots are drawn from a sample (``sampled``).
PLOT_TRIALS = 500
LOG_SCALED = ("size_bytes", "size_gzip_bytes", "ideal_bytes", "bitops", "macs", "latency_ms")
COLOURS = {"front": "#1f77b4", "feasible": "#9e9e9e", "infeasible": "#d62728", "preset": "#ff7f0e", "reference": "#000000"}


def axis_label(metric: str) -> str:
    """A plotted metric named with the split it was scored on (the plots show what the search selected by)."""
    return f"{metric} (validation)" if metric in ("accuracy", "accuracy_drop", "kl_divergence") else metric


def _points(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, str]]:
    front = {t.number for t in pareto.front(study)}
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if METRICS_ATTR not in t.user_attrs:
            continue
        kind = "front" if t.number in front else ("feasible" if t.user_attrs.get(FEASIBLE_ATTR, True) else "infeasible")
        points.append((t, kind))
    return points


def reference_point(study: optuna.Study, directions: Mapping[str, str]) -> list[float]:
    """A hypervolume reference point just beyond the worst value observed for each objective."""
    values = [t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    point = []
    for i, direction in enumerate(directions.values()):
        column = [v[i] for v in values]
        worst = min(column) if direction == "maximize" else max(column)
        point.append(worst - 0.1 * abs(worst) if direction == "maximize" else worst + 0.1 * abs(worst) + 1e-12)
    return point


def pareto_html(study: optuna.Study, metrics: Sequence[str], presets: Mapping[str, Mapping[str, float]],
                reference: Mapping[str, float]) -> str:
    """Interactive plotly grid: one scatter per pair of metrics; presets and the float model overlaid."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = list(itertools.combinations(metrics, 2))
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[f"{axis_label(y)} vs {axis_label(x)}" for x, y in pairs])
    points = _points(study)
    attrs = study.user_attrs  # test figures of trials that reached the front, shown on hover
    for col, (x, y) in enumerate(pairs, start=1):
        for kind in ("feasible", "infeasible", "front"):
            chosen = [t for t, k in points if k == kind]
            fig.add_trace(go.Scatter(
                x=[t.user_attrs[METRICS_ATTR][x] for t in chosen], y=[t.user_attrs[METRICS_ATTR][y] for t in chosen],
                mode="markers", name=kind, legendgroup=kind, showlegend=col == 1,
                marker={"color": COLOURS[kind], "size": 9 if kind == "front" else 6, "symbol": "x" if kind == "infeasible" else "circle"},
                text=[f"trial {t.number}<br>run {t.user_attrs.get(RUN_ID_ATTR, '')}{_test_note(attrs, t.number)}" for t in chosen],
            ), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=[m[x] for m in presets.values()], y=[m[y] for m in presets.values()], mode="markers+text",
            text=list(presets), textposition="top center", name="presets", legendgroup="presets", showlegend=col == 1,
            marker={"color": COLOURS["preset"], "size": 11, "symbol": "star"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=[reference[x]], y=[reference[y]], mode="markers", name="float32 reference",
                                 legendgroup="ref", showlegend=col == 1,
                                 marker={"color": COLOURS["reference"], "size": 10, "symbol": "diamond"}), row=1, col=col)
        fig.update_xaxes(title_text=axis_label(x), row=1, col=col)
        fig.update_yaxes(title_text=axis_label(y), row=1, col=col)
    fig.update_layout(title=f"Pareto front of {study.study_name}", height=480, width=max(520 * len(pairs), 600))
    # plotly.js is embedded, not fetched: reports must open on machines without internet.
    return fig.to_html(include_plotlyjs=True, full_html=True)


def _test_note(attrs: Mapping[str, Any], number: int) -> str:
    figures = attrs.get(f"{CONFIRMED_ATTR_PREFIX}{number}", {})
    if "test_accuracy" not in figures:
        return ""
    return (f"<br>test accuracy {figures['test_accuracy']:.4f} [{figures['test_accuracy_low']:.4f}, "
            f"{figures['test_accuracy_high']:.4f}] (reported, not selected by)")


def _near(a: float, b: float, share: float = 0.05) -> bool:
    return abs(a - b) <= share * max(abs(a), abs(b), 1e-12)


def pareto_png(study: optuna.Study, metrics: Sequence[str], presets: Mapping[str, Mapping[str, float]],
               reference: Mapping[str, float]) -> bytes:
    """The same grid as ``pareto_html``, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(itertools.combinations(metrics, 2))
    plt.style.use("default")  # Optuna's matplotlib plots switch the global style
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    points = _points(study)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        for kind, marker in (("feasible", "o"), ("infeasible", "x"), ("front", "o")):
            chosen = [t.user_attrs[METRICS_ATTR] for t, k in points if k == kind]
            ax.scatter([m[x] for m in chosen], [m[y] for m in chosen], c=COLOURS[kind], marker=marker,
                       s=40 if kind == "front" else 16, label=kind, zorder=3 if kind == "front" else 2)
        front = sorted((t.user_attrs[METRICS_ATTR] for t, k in points if k == "front"), key=lambda m: m[x])
        ax.plot([m[x] for m in front], [m[y] for m in front], c=COLOURS["front"], lw=0.8, alpha=0.5)
        placed: list[tuple[float, float]] = []
        for name, m in presets.items():
            ax.scatter([m[x]], [m[y]], c=COLOURS["preset"], marker="*", s=140, zorder=4)
            # Presets that land on (nearly) one spot get their labels stacked, not printed over each other.
            stacked = sum(_near(m[x], px) and _near(m[y], py) for px, py in placed)
            placed.append((m[x], m[y]))
            ax.annotate(name, (m[x], m[y]), textcoords="offset points", xytext=(4, 4 + 9 * stacked), fontsize=7,
                        color=COLOURS["preset"])
        ax.scatter([reference[x]], [reference[y]], c=COLOURS["reference"], marker="D", s=50, label="float32", zorder=4)
        if x in LOG_SCALED:
            ax.set_xscale("log")
        if y in LOG_SCALED:
            ax.set_yscale("log")
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(y))
        ax.grid(alpha=0.3)
    axes[0][0].scatter([], [], c=COLOURS["preset"], marker="*", s=100, label="presets")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{study.study_name}: {len(points)} trials, front of {sum(k == 'front' for _, k in points)}")
    fig.tight_layout()
    return _png(fig)


def front_policies_png(study: optuna.Study) -> bytes | None:
    """Per-layer view of the front: one row per front trial, one column per layer; colour = bits, text = sparsity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = []
    for t in pareto.front(study):
        policy = t.user_attrs.get(POLICY_ATTR)
        if policy:
            rows.append((t, policy["layers"]))
    if not rows:
        return None
    layers = list(rows[0][1])
    bits = np.array([[r[1][name]["bits"] for name in layers] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(layers) + 3, 0.45 * len(rows) + 1.6))
    image = ax.imshow(np.log2(bits), cmap="viridis_r", aspect="auto", vmin=1, vmax=5)
    for i, (_, policy) in enumerate(rows):
        for j, name in enumerate(layers):
            p = policy[name]
            text = f"{p['bits']}b"
            if p.get("structure") == "2:4":
                text += " 2:4"
            elif p["sparsity"]:
                text += f" s{p['sparsity']:.2f}"
            if p.get("clusters"):
                text += f" k{p['clusters']}"
            if p.get("width", 1.0) < 1.0:
                text += f" w{p['width']:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if p["bits"] <= 2 else "white")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(rows)), [f"trial {t.number}" for t, _ in rows])
    bar = fig.colorbar(image, ax=ax, ticks=[1, 2, 3, 4, 5])
    bar.ax.set_yticklabels(["2", "4", "8", "16", "32"])
    bar.set_label("weight bits")
    ax.set_title("Front policies per layer (b = bits, s = sparsity, k = clusters, w = width)")
    fig.tight_layout()
    return _png(fig)


def trials_csv(study: optuna.Study) -> str:
    """Every trial: number, state, Optuna params, every validation metric, the test figures and confirmed
    latency of trials that reached the front (blank for the others), feasibility and its MLflow run id."""
    frame = study.trials_dataframe(attrs=("number", "state", "params", "datetime_start", "datetime_complete"))
    trials = study.get_trials(deepcopy=False)  # one read, no copies: the same rows as the frame
    metrics = [t.user_attrs.get(METRICS_ATTR, {}) for t in trials]
    names = sorted({k for m in metrics for k in m})
    for name in names:
        frame[name] = [m.get(name) for m in metrics]
    attrs = study.user_attrs  # figures confirmed for front trials only: test split and re-timed latency
    confirmed = [attrs.get(f"{CONFIRMED_ATTR_PREFIX}{t.number}", {}) for t in trials]
    for name in (*TEST_METRIC_NAMES, *CONFIRMED_LATENCY_NAMES):
        frame[name] = [c.get(name) for c in confirmed]
    frame["feasible"] = [t.user_attrs.get(FEASIBLE_ATTR) for t in trials]
    frame["policy"] = [json.dumps(t.user_attrs.get(POLICY_ATTR)) if t.user_attrs.get(POLICY_ATTR) else "" for t in trials]
    frame[RUN_ID_ATTR] = [t.user_attrs.get(RUN_ID_ATTR, "") for t in trials]
    return frame.to_csv(index=False)


def build(study: optuna.Study, directions: Mapping[str, str], presets: Mapping[str, Mapping[str, float]],
          reference: Mapping[str, float]) -> dict[str, bytes | str]:
    """Every report file (path under the parent run's artifacts → content). Parts that cannot be drawn yet are skipped."""
    files: dict[str, bytes | str] = {"trials.csv": trials_csv(study)}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return files
    metrics = list(directions)
    if len(metrics) >= 2:
        files["report/pareto.html"] = pareto_html(study, metrics, presets, reference)
        files["report/pareto.png"] = pareto_png(study, metrics, presets, reference)
    policies = front_policies_png(study)
    if policies is not None:
        files["report/front_policies.png"] = policies
    figures: list[Any] = []
    view, note = sampled(study, complete)
    point = reference_point(study, directions)
    _optional(figures, lambda: optuna.visualization.plot_hypervolume_history(view, point).update_layout(
        title=f"Hypervolume history{note}"))
    _optional(files, lambda: _png(_titled(optuna.visualization.matplotlib.plot_hypervolume_history(view, point),
                                          f"Hypervolume history{note}").figure), "report/hypervolume.png")
    if len(complete) >= 4:
        for i, metric in enumerate(metrics):
            _optional(figures, lambda i=i, metric=metric: optuna.visualization.plot_param_importances(
                view, target=lambda t: t.values[i], target_name=metric).update_layout(title=f"Parameter importances for {metric}{note}"))
    if figures:
        parts = [fig.to_html(include_plotlyjs=i == 0, full_html=False) for i, fig in enumerate(figures)]
        files["report/study.html"] = "<html><head><meta charset='utf-8'></head><body>" + "".join(parts) + "</body></html>"
    return files


def sampled(study: optuna.Study, complete: Sequence[optuna.trial.FrozenTrial]) -> tuple[optuna.Study, str]:
    """The study itself, or above ``PLOT_TRIALS`` COMPLETE trials an in-memory study of an evenly spaced sample of
    them (importances and hypervolume history cost more than linear time), with a note for the plot's title."""
    if len(complete) <= PLOT_TRIALS:
        return study, ""
    ordered = sorted(complete, key=lambda t: t.number)
    step = len(ordered) / PLOT_TRIALS
    view = optuna.create_study(directions=study.directions)
    view.add_trials([ordered[int(i * step)] for i in range(PLOT_TRIALS)])
    return view, f" (sampled: {PLOT_TRIALS} of {len(ordered)} trials, evenly spaced)"


def _titled(axes: Any, title: str) -> Any:
    axes.set_title(title)
    return axes


def _optional(into: dict[str, Any] | list[Any], draw: Any, name: str = "") -> None:
    try:
        value = draw()
    except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn yet must not stop the study
        log.debug("report part %s skipped: %s", name or draw, exc)
        return
    if isinstance(into, list):
        into.append(value)
    else:
        into[name] = value


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
