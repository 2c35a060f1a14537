"""``objectives.compat`` owns the import order: no module may start importing TensorFlow, tf_keras, TF-MOT,
LiteRT or ai-edge-quantizer before compat has set ``TF_USE_LEGACY_KERAS=1`` (else ``tf.keras`` stays
Keras 3 and TF-MOT fails).

Each module is imported in a fresh interpreter: in one shared process the first import of compat would
hide every later offender. A ``sys.meta_path`` finder watches for those libraries; the first request for
one decides (the variable cannot be unset afterwards), so the probe reports it and exits right there,
without loading TensorFlow, which keeps a check to a fraction of a second.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert", "ai_edge_quantizer")
COMPAT = "litesweep.objectives.compat"

#: Runs in the fresh interpreter: argv[1] is the module to import, argv[2] the repository root.
_PROBE = rf"""
import importlib, json, os, sys, traceback

WATCHED = {set(WATCHED)}
COMPAT = {COMPAT!r}


class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in WATCHED:
            return None
        ok = os.environ.get("TF_USE_LEGACY_KERAS") == "1" and COMPAT in sys.modules
        here = [f"{{os.path.relpath(f.filename, sys.argv[2])}}:{{f.lineno}}" for f in traceback.extract_stack()
                if f.filename.startswith(sys.argv[2]) and "site-packages" not in f.filename]
        print(json.dumps({{"library": name, "ok": ok, "at": here[-1] if here else "?"}}), flush=True)
        os._exit(0)  # decided: nothing later can change it, and loading TensorFlow would take seconds


sys.meta_path.insert(0, _Watch())
importlib.import_module(sys.argv[1])
print(json.dumps(None), flush=True)
"""


def _modules() -> list[str]:
    import litesweep.objectives

    found = []
    for package in (litesweep.objectives,):
        found.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith("__main__"):  # importing a __main__ runs the program
                found.append(info.name)
    return found


def _probe(module: str) -> tuple[str, dict | None, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, module, f"{ROOT}{os.sep}"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("{", "null"))]
    if proc.returncode != 0 or not lines:
        return module, {"library": "?", "ok": False, "at": f"import failed: {proc.stderr.strip()[-300:]}"}, proc.stderr
    return module, json.loads(lines[-1]), proc.stderr


def test_no_module_imports_tensorflow_before_compat() -> None:
    modules = _modules()
    assert f"{COMPAT}" in modules and "litesweep.objectives.techniques.quantize" in modules
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(_probe, modules))
    offenders = [f"{module}: '{seen['library']}' imported at {seen['at']} before {COMPAT} set TF_USE_LEGACY_KERAS=1"
                 for module, seen, _ in results if seen is not None and not seen["ok"]]
    assert not offenders, "\n".join(offenders)
    # The probe must see the heavy imports it is there to catch, or it proves nothing.
    assert any(seen and seen["library"].startswith("tensorflow") for _, seen, _ in results)


def test_search_and_tests_take_tensorflow_only_from_compat() -> None:
    """search/ reaches TensorFlow only through objectives/, tests/ only through compat: no direct import of a
    watched library anywhere in them (read from the source, so it costs no interpreter per module)."""
    direct = []
    for path in sorted([*(ROOT / "search").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            direct += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n.partition(".")[0] in WATCHED]
    assert not direct, "\n".join(direct)

