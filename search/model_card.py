"""What ``litesweep-pick`` hands over: the model card beside the exported ``model.tflite``, the console lines,
the exported folder itself and the registered model.

Figures are labelled by where they come from: ``validation`` (what the search and the pick selected by),
``test`` (the held-out split, reported with its Wilson 95% interval, never selected by) and ``confirmed``
latency (re-timed side by side at the end of the run, with the range of round medians). A figure a run
does not hold (a study from before it was measured) is not shown. "How it was made" and the reproduce
command come from the study's recorded config (``config.yaml`` on its parent run).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from litesweep.search.ledger import TAG_DELEGATE
from litesweep.search.pareto import number_cell
from litesweep.search.preflight import mask

if TYPE_CHECKING:
    from litesweep.search.pick import Candidate


def preset_phrase(name: str) -> str:
    """How a card and the console name a converter preset."""
    return f"the TFLite converter's `{name}` preset, no search policy"


def _with_range(key: str, low: str, high: str, form: str) -> Callable[[Mapping[str, float]], str]:
    def cell(m: Mapping[str, float]) -> str:
        if m.get(key) is None:
            return "-"
        spread = f" [{m[low]:{form}}, {m[high]:{form}}]" if m.get(low) is not None and m.get(high) is not None else ""
        return f"{m[key]:{form}}{spread}"

    return cell


#: (header, cell, the key that must be on some row for the column to show) of the card's metrics table.
COLUMNS: tuple[tuple[str, Callable[[Mapping[str, float]], str], str], ...] = (
    ("validation accuracy", number_cell("accuracy", ".4f"), "accuracy"),
    ("validation accuracy_drop", number_cell("accuracy_drop", ".2f"), "accuracy_drop"),
    ("test accuracy [95% interval]", _with_range("test_accuracy", "test_accuracy_low", "test_accuracy_high", ".4f"), "test_accuracy"),
    ("test accuracy_drop", number_cell("test_accuracy_drop", ".2f"), "test_accuracy_drop"),
    ("size_bytes", number_cell("size_bytes", ",.0f"), "size_bytes"),
    ("size_gzip_bytes", number_cell("size_gzip_bytes", ",.0f"), "size_gzip_bytes"),
    ("latency_ms (search)", number_cell("latency_ms", ".4f"), "latency_ms"),
    ("confirmed latency_ms [low, high]", _with_range("latency_ms_confirmed", "latency_ms_low", "latency_ms_high", ".4f"),
     "latency_ms_confirmed"),
    ("compression_ratio", number_cell("compression_ratio", ".2f"), "compression_ratio"),
)


def describe(metrics: Mapping[str, float]) -> str:
    """One line of a model's figures: validation first, then test and confirmed latency when measured."""
    parts = [f"validation accuracy {metrics['accuracy']:.4f}", f"size_bytes {int(metrics['size_bytes']):,}",
             f"latency_ms {metrics['latency_ms']:.4f}"]
    if metrics.get("test_accuracy") is not None:
        parts.append(f"test {_with_range('test_accuracy', 'test_accuracy_low', 'test_accuracy_high', '.4f')(metrics)}")
    if metrics.get("latency_ms_confirmed") is not None:
        parts.append(f"confirmed latency_ms {_with_range('latency_ms_confirmed', 'latency_ms_low', 'latency_ms_high', '.4f')(metrics)}")
    return ", ".join(parts)


def metrics_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> list[str]:
    """The markdown table of ``(label, metrics)`` rows; a column no row has a figure for is left out."""
    shown = [(head, cell) for head, cell, key in COLUMNS if any(m.get(key) is not None for _, m in rows)]
    table = ["| model | " + " | ".join(head for head, _ in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    return table + [f"| {label} | " + " | ".join(cell(m) for _, cell in shown) + " |" for label, m in rows]


def _policy_section(policy: Mapping[str, Any]) -> list[str]:
    layers = ["| layer | bits | act bits | sparsity | structure | clusters | width | post-training mode |", "|---" * 8 + "|"]
    for name, p in policy["layers"].items():
        layers.append(f"| {name} | {p['bits']} | {p['act_bits']} | {p['sparsity']:.2f} | {p['structure']} | "
                      f"{p['clusters'] or '-'} | {p['width']:.2f} | {p['ptq_mode'] if policy['method'] != 'qat' else '-'} |")
    return [f"## Policy (method `{policy['method']}`)", "", *layers, "",
            f"Distillation: temperature {policy['distill']['temperature']:.3g}, weight {policy['distill']['weight']:.3g}."]


def model_card(study: str, picked: Candidate, reference: Mapping[str, float], other: Candidate | None,
               policy: Mapping[str, Any] | None, config: DictConfig, recorded: bool, overrides: Sequence[str], *,
               how_picked: str, reason: str | None, tracking_uri: str, parent_run_id: str, sha256: str,
               metric: str = "accuracy") -> str:
    """The markdown model card: figures, policy (or preset), how it was made, how to reproduce it.

    Args:
        study: the study's name.
        picked: the exported candidate (a front trial or a preset).
        reference: the float32 reference's figures.
        other: a model to compare with: the best preset beside a trial, the best front trial beside a preset.
        policy: the trial's ``policy.json`` (None for a preset).
        config: the study's recorded config (or, when ``recorded`` is false, the pick command's).
        recorded: whether ``config`` is the study's ``config.yaml``.
        overrides: ``reproduce.reproduce_overrides`` of ``config``.
        how_picked: the preference and constraints, in words.
        reason: why a preset was picked over the front (None for a trial).
        metric: what the study's ``accuracy`` scores (``objective.metric``).
    """
    rows: list[tuple[str, Mapping[str, float]]] = [("this model", picked.metrics)]
    rows += [("float32 reference", reference)] if reference else []
    if other is not None:
        rows.append((f"best front trial ({other.label})" if other.preset is None else f"best preset ({other.preset})", other.metrics))
    source = (f"the study's recorded config (`config.yaml` on parent run `{parent_run_id}`)" if recorded else
              "the pick command's config: the study's parent run holds no `config.yaml`")
    if picked.preset is not None:
        made = ["## Conversion", "", f"This is {preset_phrase(picked.preset)}: the float base model converted by "
                "`tf.lite.TFLiteConverter` with the preset's settings; no pruning, clustering or fine-tuning."
                + (f" Picked over the front: {reason}." if reason else "")]
        reproduce = ["The base model and data come from litesweep's defaults with these overrides:", "", "```text",
                     " ".join(shlex.quote(o) for o in overrides) or "(none)", "```", "",
                     f"`litesweep.objectives.presets.convert_preset(base_model, '{picked.preset}', calibration)` converts "
                     "that base model (in its compressible form, `litesweep.objectives.rewrite.compressible_form`: the "
                     "same outputs) into this file; there is no policy for `litesweep-apply` to rebuild; the study "
                     "measured it once, as every new study does (`study.presets=true`)."]
    else:
        assert policy is not None
        made = _policy_section(policy)
        reproduce = ["```bash", f"litesweep-apply apply.run_id={picked.run_id} {' '.join(shlex.quote(o) for o in overrides)}".rstrip(),
                     "```", "",
                     "`litesweep-apply` rebuilds the model from `policy.json`, the cached base model and these settings, "
                     "and compares the metrics."]
    data, model = config.data, config.model
    return mask("\n".join([
        f"# Model card: {study}, {picked.label}",
        "",
        f"`model.tflite` (sha256 `{sha256}`), picked by `litesweep-pick` ({how_picked}) from the Pareto front of Optuna "
        f"study `{study}` and the converter's presets. MLflow run `{picked.run_id}` in `{tracking_uri}`.",
        "",
        "## Metrics (LiteRT interpreter)",
        "",
        "Validation figures are what the search and this pick selected by; test figures are on the held-out test "
        "split (Wilson 95% interval), reported and never selected by.",
        "",
        *metrics_table(rows),
        *(["", f"`accuracy` is `objective.metric` = `{metric}` (higher is better)."] if metric != "accuracy" else []),
        "",
        f"Latency (search): median of single-sample invocations on {config.latency.threads} thread(s) after "
        f"{config.latency.warmup} warm-up runs. Delegate: see the run's `{TAG_DELEGATE}` tag.",
        *(["Confirmed latency: re-timed at the end of the run side by side with the front and the presets, in shuffled "
           "rounds; the median of round medians, with the lowest and highest round median. Pick calls one model "
           "faster than another only when those ranges do not overlap."] if picked.metrics.get("latency_ms_confirmed") else []),
        "",
        *made,
        "",
        "## How it was made",
        "",
        f"From {source}: data `{data.name}` ({data.source}, split seed {data.seed}); "
        f"base model `{model.path or model.name}`; fine-tuning {OmegaConf.to_container(config.finetune, resolve=True)}.",
        "",
        "## How to reproduce",
        "",
        *reproduce,
        "",
    ]))  # a card is shared: no password from the URIs or overrides


def nothing_meets(trials: Sequence[Candidate], presets: Sequence[Candidate], constraints: Mapping[str, tuple[str, str, float]]) -> str:
    """The one-line error when nothing meets the constraints: the closest trials and presets, with their figures."""
    wanted = ", ".join(f"{metric} {op} {bound:g}" for metric, op, bound in constraints.values())
    named = ["; ".join(f"{c.label} ({describe(c.metrics)})" for c in pool) for pool in (trials, presets)]
    return (f"no front trial or preset meets {wanted}; closest: {named[0] or 'none (no finished trial)'}; "
            f"closest presets: {named[1] or 'none (the study measured no preset)'}")


def summary(study: str, how_picked: str, picked: Candidate, reason: str | None, reference: Mapping[str, float],
            best_trial: Candidate | None, best_preset: Candidate | None) -> str:
    """The console lines of a pick: what was picked and why (one line), then its figures beside the float32
    reference and the best of the other kind (the best preset beside a trial, the best front trial beside a preset)."""
    if picked.preset is not None:
        lines = [f"Picked {preset_phrase(picked.preset)}, from study '{study}' ({how_picked}): {reason}."]
    else:
        lines = [f"Picked {picked.label} of study '{study}' ({how_picked}):"]
    lines.append(f"  picked            {describe(picked.metrics)}")
    if reference:
        lines.append(f"  float32 reference {describe(reference)}")
    other, kind = (best_trial, "best front trial") if picked.preset is not None else (best_preset, "best preset")
    lines.append(f"  {kind:<17} " + (f"{describe(other.metrics)} ({other.label})" if other else "none meets the constraints"))
    return "\n".join(lines)


def write_folder(files: Mapping[str, bytes], output_dir: Path) -> None:
    """Write ``files`` into ``output_dir``, replacing it whole: a reader never sees a half-written export.

    The folder gets the mode any new directory gets (0755 under umask 022), not a temporary folder's 0700.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".pick-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o777)  # the umask applies
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def register(client: MlflowClient, tracking_uri: str, run_id: str, tflite_path: Path, name: str, alias: str,
             model_id: str | None = None) -> str:
    """Add the pyfunc flavour to the picked LoggedModel (``model_id``; for a study from before them, log a pyfunc model
    on the picked run), register it, point ``alias`` at it and say how to serve it."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from litesweep.objectives.runtime import input_shape, predict
    from litesweep.search.serving import TfliteModel
    from litesweep.search.tracking import quiet_run_urls

    quiet_run_urls(tracking_uri)  # ending the run would print its URL, password included
    tflite = tflite_path.read_bytes()
    example = np.zeros((1, *input_shape(tflite)), dtype=np.float32)
    signature = infer_signature(example, predict(tflite, example)[0])
    mlflow.set_tracking_uri(tracking_uri)
    with contextlib.nullcontext() if model_id else mlflow.start_run(run_id=run_id):  # the model names its run already
        info = mlflow.pyfunc.log_model(
            name="served_model", python_model=TfliteModel(), artifacts={"tflite": str(tflite_path)},
            signature=signature, input_example=example, registered_model_name=name, model_id=model_id,
            pip_requirements=["ai-edge-litert==2.3.*", "numpy", "mlflow==3.17.*"],
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    print(f"Registered as models:/{name}@{alias} (version {version}); serve it with:\n"
          f"  MLFLOW_TRACKING_URI='{mask(tracking_uri)}' mlflow models serve -m 'models:/{name}@{alias}' "
          "--env-manager local --host 127.0.0.1 --port 5001")
    return version
