"""Benchmark: which policy levers move latency on this machine, timed side by side with the presets.

Builds the workbench of a config (default: the default sweep's MNIST-5k and ``small_cnn``), converts the
presets and a handful of fixed QAT policies (all 8-bit, all 4-bit, half width, half width + 50% sparsity),
then times every file in ``latency.confirm_rounds`` interleaved rounds (``Workbench.confirm_latency``, the
same protocol as the end-of-run confirmation). Speed is relative to the fastest preset of the same run.
Prints a table and writes ``benchmarks/reports/latency_levers.{md,json}``.

Run::

    .venv/bin/python benchmarks/latency_levers.py                      # default model
    .venv/bin/python benchmarks/latency_levers.py model=fashion_cnn data=keras data.dataset=fashion_mnist
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("float32", "dynamic_int8", "full_int8")


def main(overrides: list[str]) -> None:
    from litesweep.objectives.policy import DistillPolicy, LayerPolicy, Policy
    from litesweep.search.cli import compose_config
    from litesweep.search.config import register_configs
    from litesweep.search.workbench import build_workbench

    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([f"paths.output_dir={tmp}", f"paths.cache_dir={ROOT / '.cache' / 'litesweep'}", "progress=false",
                              *overrides], str(ROOT / "conf"))
        bench, _ = build_workbench(cfg)
    names = [info.name for info in bench.layers]
    narrow = bench.narrowable()

    prunable = {i.name for i in bench.layers if "prune" in i.techniques}

    def policy(bits: int, width: float = 1.0, sparsity: float = 0.0, method: str = "qat") -> Policy:
        return Policy({n: LayerPolicy(bits=bits if n != bench.output_layer else 8, width=width if n in narrow else 1.0,
                                      sparsity=sparsity if n in prunable else 0.0) for n in names}, DistillPolicy(), method)

    # qat: int8 activations everywhere; mixed + dynamic recipes: int8 weights with float activations (as dynamic_int8).
    policies = {"qat_int8": policy(8), "qat_int4": policy(4), "qat_int8_width_0.5": policy(8, 0.5),
                "qat_int4_width_0.5": policy(4, 0.5), "qat_int8_width_0.5_sparsity_0.5": policy(8, 0.5, 0.5),
                "mixed_dynamic_int8_width_0.75": policy(8, 0.75, method="mixed"),
                "mixed_dynamic_int8_width_0.5": policy(8, 0.5, method="mixed")}
    files: dict[str, bytes] = {}
    accuracy: dict[str, float] = {}
    for name in PRESETS:
        files[name], measured = bench.preset(name)
        accuracy[name] = measured.metrics.accuracy
    for name, chosen in policies.items():
        output = bench.run(chosen)
        files[name], accuracy[name] = output.tflite, output.metrics.accuracy
    start = time.perf_counter()
    confirmed = bench.confirm_latency(files)
    fastest_preset = min(PRESETS, key=lambda p: confirmed[p].median)
    rows = [{"file": name, "size_bytes": len(tflite), "val_accuracy": round(accuracy[name], 4),
             **{k: round(v, 5) for k, v in confirmed[name].as_dict().items()},
             "speed_vs_fastest_preset": round(confirmed[fastest_preset].median / confirmed[name].median, 3)}
            for name, tflite in files.items()]
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "command": " ".join(["benchmarks/latency_levers.py", *overrides]), "rounds": bench.protocol.confirm_rounds,
              "timing_s": round(time.perf_counter() - start, 1), "fastest_preset": fastest_preset, "rows": rows}
    header = "| file | size B | val acc | latency ms (median of rounds) | range | speed vs fastest preset |"
    lines = [f"# Latency levers ({report['date']})", "", f"`{report['command']}`; {report['rounds']} interleaved rounds; "
             f"fastest preset here: `{fastest_preset}`.", "", header, "|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['size_bytes']:,} | {r['val_accuracy']:.4f} | {r['latency_ms_confirmed']:.4f} | "
              f"{r['latency_ms_low']:.4f}-{r['latency_ms_high']:.4f} | {r['speed_vs_fastest_preset']:.2f}x |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"_{o.split('=', 1)[1]}" for o in overrides if o.startswith("model="))
    (out / f"latency_levers{suffix}.md").write_text(text)
    (out / f"latency_levers{suffix}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
