"""Benchmark: a litesweep training trial against a hand-written TF-MOT loop doing the same work (issue 17).

The same process, model, data, epochs, batch size and fixed policy for both:

* the default sweep's workbench (MNIST-5k, the cached ``small_cnn``), composed as ``latency_levers.py`` does;
  the bare loop takes only its arrays and base model from it;
* the policy: every compressible layer pruned to 50% (``finetune.prune_epochs`` epochs, TF-MOT's polynomial
  schedule), then per-layer n-bit QAT (4-bit weights, the output layer 8-bit; ``finetune.qat_epochs``) keeping
  the pruning zeros, converted with ``Optimize.DEFAULT`` and evaluated on the validation split (accuracy, and
  single-sample latency by the same protocol as litesweep's);
* bare: ``keras.models.clone_model``, ``prune_low_magnitude``, ``model.fit`` on arrays, strip, n-bit QAT,
  ``model.fit`` on arrays with a callback re-applying the masks, ``TFLiteConverter``, the LiteRT interpreter.
  No litesweep code;
* litesweep: ``Workbench.run(policy)``, without distillation (weight 0) and with it (``--distill``, weight 0.5,
  temperature 4).

After one warm-up of each, ``--rounds`` rounds run the variants one after the other (bare, litesweep,
litesweep + distillation; the order rotates each round) and the report gives medians per phase (fine-tune,
convert, evaluate, total) and the ratios litesweep / bare. Prints a table and writes
``benchmarks/reports/bare_loop.{md,json}``. ``--profile`` adds one cProfiled trial of each variant
(tracing, graphs, predict, callbacks, input adapters, cloning, conversion, garbage collection side by side).

Run::

    .venv/bin/python benchmarks/bare_loop.py                 # 5 rounds
    .venv/bin/python benchmarks/bare_loop.py --rounds 7 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("finetune", "convert", "evaluate", "total")
SPARSITY, BITS, OUTPUT_BITS = 0.5, 4, 8
DISTILL_WEIGHT, DISTILL_TEMPERATURE = 0.5, 4.0


# --- the bare loop: TF-MOT and tf_keras only --------------------------------------------------------------


class BareLoop:
    """Prune → n-bit QAT → convert → evaluate, written directly against tf_keras and TF-MOT."""

    def __init__(self, base: Any, x: Any, y: Any, x_val: Any, y_val: Any, layers: list[str], output_layer: str,
                 settings: Any, protocol: Any) -> None:
        self.base, self.x, self.y, self.x_val, self.y_val = base, x, y, x_val, y_val
        self.layers, self.output_layer, self.ft, self.protocol = layers, output_layer, settings, protocol

    def run(self) -> tuple[dict[str, float], float]:
        import numpy as np
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        sparsity = tfmot.sparsity.keras
        ft, timings = self.ft, {}
        start = time.perf_counter()
        model = keras.models.clone_model(self.base)
        model.set_weights(self.base.get_weights())
        end_step = max(math.ceil(len(self.x) / ft.batch_size) * ft.prune_epochs - 1, 1)
        schedule = sparsity.PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=end_step, frequency=max((end_step + 1) // 10, 1))

        def prune(layer: Any) -> Any:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in self.layers else layer

        pruned = keras.models.clone_model(model, clone_function=prune)
        pruned.compile(optimizer=keras.optimizers.Adam(ft.learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(self.x, self.y, batch_size=ft.batch_size, epochs=ft.prune_epochs,
                   callbacks=[sparsity.UpdatePruningStep()], verbose=0)
        model = sparsity.strip_pruning(pruned)
        masks = {n: tf.constant((model.get_layer(n).kernel.numpy() != 0).astype("float32")) for n in self.layers}
        qat = _bare_qat(model, {n: OUTPUT_BITS if n == self.output_layer else BITS for n in self.layers})
        kernels = [(w, masks[n]) for n in self.layers for w in qat.get_layer(f"quant_{n}").weights
                   if w.name.startswith(f"{n}/") and w.name.endswith("kernel:0")]

        class KeepZeros(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                for variable, mask in kernels:
                    variable.assign(variable * mask)

        qat.compile(optimizer=keras.optimizers.Adam(ft.learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        qat.fit(self.x, self.y, batch_size=ft.batch_size, epochs=ft.qat_epochs, callbacks=[KeepZeros()], verbose=0)
        timings["finetune"] = time.perf_counter() - start

        start = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        tflite = converter.convert()
        timings["convert"] = time.perf_counter() - start

        start = time.perf_counter()
        accuracy = _bare_evaluate(tflite, self.x_val, self.y_val, self.protocol, np)
        timings["evaluate"] = time.perf_counter() - start
        return timings, accuracy


def _bare_qat(model: Any, bits: dict[str, int]) -> Any:
    """Per-layer n-bit QAT with TF-MOT's experimental n-bit scheme; weightless layers annotated 8-bit."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_registry as registry,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_scheme as scheme,
    )

    quant = tfmot.quantization.keras

    def config(layer: Any, n: int) -> Any:  # a fresh registry per lookup: TF-MOT 0.8.1 shares bit widths across registries
        return registry.DefaultNBitQuantizeRegistry(num_bits_weight=n, num_bits_activation=8).get_quantize_config(layer)

    probe = registry.DefaultNBitQuantizeRegistry()

    def annotate(layer: Any) -> Any:
        if layer.name in bits:
            return quant.quantize_annotate_layer(layer, quantize_config=config(layer, bits[layer.name]))
        if not isinstance(layer, keras.layers.InputLayer) and probe.supports(layer):
            return quant.quantize_annotate_layer(layer, quantize_config=config(layer, 8))
        return layer

    with quant.quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        return quant.quantize_apply(annotated, scheme.DefaultNBitQuantizeScheme(num_bits_weight=8, num_bits_activation=8))


def _bare_evaluate(tflite: bytes, x_val: Any, y_val: Any, protocol: Any, np: Any) -> float:
    """Validation accuracy (batches of 256) and single-sample latency by ``protocol``, with LiteRT's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    def as_input(x: Any, detail: dict) -> Any:
        if detail["dtype"] == np.int8:
            scale, zero = detail["quantization"]
            return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        return x.astype(detail["dtype"])

    batch = 256
    interpreter = Interpreter(model_content=tflite, num_threads=1)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]
    predicted = []
    for i in range(0, len(x_val), batch):
        chunk = x_val[i:i + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        interpreter.set_tensor(inp["index"], as_input(padded, inp))
        interpreter.invoke()
        predicted.append(np.argmax(interpreter.get_tensor(out["index"]), axis=1)[:len(chunk)])
    accuracy = float(np.mean(np.concatenate(predicted) == y_val))
    single = Interpreter(model_content=tflite, num_threads=protocol.threads)
    single.allocate_tensors()
    single.set_tensor(single.get_input_details()[0]["index"], as_input(x_val[:1], single.get_input_details()[0]))
    for _ in range(protocol.warmup):
        single.invoke()
    times: list[float] = []
    deadline = time.perf_counter() + protocol.max_seconds
    while len(times) < protocol.min_runs or (len(times) < protocol.max_runs and time.perf_counter() < deadline):
        t = time.perf_counter()
        single.invoke()
        times.append(time.perf_counter() - t)
    return accuracy


# --- the benchmark --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after one warm-up (default 5)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one litesweep trial")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for litesweep")
    args = parser.parse_args()

    from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs
    from litesweep.search.workbench import build_workbench

    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([f"paths.output_dir={tmp}", f"paths.cache_dir={ROOT / '.cache' / 'litesweep'}", "progress=false",
                              *args.overrides], str(ROOT / "conf"))
        bench, _ = build_workbench(cfg)
    ft = bench.finetune
    names = [info.name for info in bench.layers]
    data = bench.data
    x, y = data.x_train[: ft.max_train_samples], data.y_train[: ft.max_train_samples]
    bare = BareLoop(bench.base_model, x, y, data.x_val, data.y_val, names, bench.output_layer, ft, bench.protocol)

    def policy(distill: DistillPolicy) -> Policy:
        return Policy({n: LayerPolicy(bits=OUTPUT_BITS if n == bench.output_layer else BITS, sparsity=SPARSITY) for n in names},
                      distill, "qat")

    plain, distilled = policy(DistillPolicy()), policy(DistillPolicy(temperature=DISTILL_TEMPERATURE, weight=DISTILL_WEIGHT))

    def litesweep_trial(chosen: Policy) -> Callable[[], tuple[dict[str, float], float]]:
        def run() -> tuple[dict[str, float], float]:
            output = bench.run(chosen)
            t = output.timings
            return {"finetune": t.get("prepare", 0.0) + t["finetune"], "convert": t["convert"], "evaluate": t["evaluate"]}, \
                output.metrics.accuracy
        return run

    variants: dict[str, Callable[[], tuple[dict[str, float], float]]] = {
        "bare": bare.run, "litesweep": litesweep_trial(plain), "litesweep_distill": litesweep_trial(distilled)}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    order = list(variants)
    for round_ in range(args.rounds + 1):  # round 0: warm-up, not counted
        for name in order:
            # Every trial starts from the same collector state: a full collection (~0.4 s at ~700k live objects)
            # otherwise lands on whichever trial crosses the threshold, about one in two, by the allocation rhythm.
            gc.collect()
            start = time.perf_counter()
            phases, accuracy = variants[name]()
            phases["total"] = time.perf_counter() - start
            if round_:
                samples[name].append({**phases, "accuracy": accuracy})
            print(f"round {round_} {name:18s} " + " ".join(f"{k} {v:.3f}" for k, v in phases.items()) + f" acc {accuracy:.4f}", flush=True)
        order = order[1:] + order[:1]
        load.append(os.getloadavg()[0])
    profile = profile_trials(variants) if args.profile else None
    write_report(args, samples, load, len(x), profile)


#: What the profile table shows: label -> a piece of ``file:line(function)`` (cumulative seconds, calls summed).
PROFILED = {
    "fit (all of it)": "training.py:1452(fit)",
    "tracing tf.functions": "tracing_compilation.py:295(_create_concrete_function)",
    "running graphs (TFE_Py_Execute)": "TFE_Py_Execute",
    "model.predict": "training.py:2471(predict)",
    "epoch-end callbacks": "callbacks.py:443(on_epoch_end)",
    "batch-end callbacks": "callbacks.py:470(on_train_batch_end)",
    "input adapters": "data_adapter.py:1232(__init__)",
    "clone_model": "cloning.py:464(clone_model)",
    "quantize_apply": "quantize.py:288(quantize_apply)",
    "TFLite convert": "lite.py:1759(convert)",
}


def profile_trials(variants: dict[str, Callable[[], Any]]) -> tuple[str, dict[str, dict[str, float]]]:
    """cProfile one trial of each variant; selected entries side by side, and garbage collection timed."""
    table: dict[str, dict[str, float]] = {}
    for name, run in variants.items():
        collected = {"s": 0.0, "start": 0.0}

        def on_gc(phase: str, info: dict, collected: dict = collected) -> None:
            if phase == "start":
                collected["start"] = time.perf_counter()
            else:
                collected["s"] += time.perf_counter() - collected["start"]

        gc.collect()
        gc.callbacks.append(on_gc)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        run()
        profiler.disable()
        total = time.perf_counter() - start
        gc.callbacks.remove(on_gc)
        stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
        row = {label: sum(v[3] for k, v in stats.items() if piece in f"{k[0]}:{k[1]}({k[2]})") for label, piece in PROFILED.items()}
        table[name] = {"trial (profiled)": total, **row, "garbage collection": collected["s"]}
    labels = list(next(iter(table.values())))
    lines = ["| cumulative s, one trial under cProfile | " + " | ".join(table) + " |", "|---" * (len(table) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{table[n][label]:.3f}" for n in table) + " |" for label in labels]
    return "\n".join(lines), table


def write_report(args: argparse.Namespace, samples: dict[str, list[dict[str, float]]], load: list[float], n_train: int,
                 profile: tuple[str, dict] | None) -> None:
    med = {name: {p: statistics.median(s[p] for s in runs) for p in (*PHASES, "accuracy")} for name, runs in samples.items()}
    spread = {name: {p: [min(s[p] for s in runs), max(s[p] for s in runs)] for p in PHASES} for name, runs in samples.items()}
    # Ratios of medians of per-round ratios: each round's variants ran back to back, under the same load.
    ratios = {name: {p: statistics.median(s[p] / b[p] for s, b in zip(runs, samples["bare"], strict=True)) for p in PHASES}
              for name, runs in samples.items() if name != "bare"}
    pairs = zip(samples["litesweep_distill"], samples["litesweep"], strict=True)
    distill_adds = statistics.median(d["total"] - p["total"] for d, p in pairs)
    command = " ".join(["benchmarks/bare_loop.py", f"--rounds {args.rounds}", *args.overrides])
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": command, "train_samples": n_train, "policy": f"sparsity {SPARSITY}, weights {BITS}-bit (output {OUTPUT_BITS}-bit)",
              "distill": {"weight": DISTILL_WEIGHT, "temperature": DISTILL_TEMPERATURE}, "load_1min": [round(v, 2) for v in load],
              "median_s": {k: {p: round(v, 3) for p, v in m.items()} for k, m in med.items()},
              "range_s": {k: {p: [round(a, 3), round(b, 3)] for p, (a, b) in r.items()} for k, r in spread.items()},
              "ratio_to_bare": {k: {p: round(v, 3) for p, v in r.items()} for k, r in ratios.items()},
              "throughput_vs_bare": {k: round(1 / r["total"], 3) for k, r in ratios.items()},
              "distillation_adds_s_per_trial": round(distill_adds, 3), "samples": samples}
    lines = [f"# Training trial vs a bare TF-MOT loop ({report['date']})", "",
             f"`{command}`; {report['machine']}; 1-min load during the run: {min(load):.1f}-{max(load):.1f} "
             f"(shared machine); {n_train} training images; policy: {report['policy']}; one warm-up round, then "
             f"{args.rounds} rounds alternating the variants (order rotating).", "",
             "| variant | fine-tune s | convert s | evaluate s | total s | total / bare (median of per-round ratios) | "
             "throughput vs bare | val acc |", "|---|---|---|---|---|---|---|---|"]
    for name, m in med.items():
        ratio = ratios.get(name, {p: 1.0 for p in PHASES})
        lines.append(f"| {name} | {m['finetune']:.3f} ({ratio['finetune']:.2f}x) | {m['convert']:.3f} | {m['evaluate']:.3f} | "
                     f"{m['total']:.3f} | {ratio['total']:.3f} | {1 / ratio['total']:.3f}x | {m['accuracy']:.4f} |")
    lines += ["", f"Distillation (weight {DISTILL_WEIGHT}, T {DISTILL_TEMPERATURE}) adds {distill_adds:+.3f} s per trial "
              "(median of per-round differences)."]
    if profile:
        lines += ["", "## Where a trial's time goes (one trial of each, cProfile)", "", profile[0]]
        report["profile_s"] = {k: {label: round(v, 3) for label, v in row.items()} for k, row in profile[1].items()}
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bare_loop.md").write_text(text)
    (out / "bare_loop.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
