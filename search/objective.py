"""``objective`` config → the ``Scorer`` the Workbench scores every ``.tflite`` with.

``objective.metric`` is a built-in name (``accuracy``, ``top_k`` with ``objective.k``, ``agreement``) or a
user function given the Hydra way, ``{_target_: module.function}`` (extra keys are bound as keyword
arguments, as ``instantiate(..., _partial_=True)`` does). The module must be importable (``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from litesweep.objectives.errors import ConfigError
from litesweep.objectives.metrics import BUILTIN_SCORERS, Scorer, builtin_scorer

ACCEPTED = f"accepted: one of {list(BUILTIN_SCORERS)} or {{_target_: module.function}}, a function f(labels, outputs) -> float"


def scorer_from_config(objective: Any) -> Scorer:
    """Resolve the ``objective`` config node into a scorer; imports a user function, nothing else.

    Raises:
        ConfigError: unknown metric name, bad ``k``, or a ``_target_`` that cannot be imported, is not
            callable or does not take ``(labels, outputs)`` with the given keyword arguments.
    """
    metric = objective.metric
    if isinstance(metric, str):
        if metric not in BUILTIN_SCORERS:
            raise ConfigError(f"objective.metric = {metric!r} is not supported; {ACCEPTED}")
        return builtin_scorer(metric, objective.k)
    if not isinstance(metric, (Mapping, DictConfig)) or "_target_" not in metric:
        raise ConfigError(f"objective.metric = {_plain(metric)!r} is not supported; {ACCEPTED}")
    target = metric["_target_"]
    function = _locate(target)
    kwargs = {k: v for k, v in _plain(metric).items() if k not in ("_target_", "_partial_")}
    try:
        inspect.signature(function).bind(None, None, **kwargs)
    except TypeError as exc:
        signature = "".join(f", {k}=..." for k in kwargs)
        raise ConfigError(f"objective.metric._target_ = {target!r} cannot be called as f(labels, outputs{signature}) "
                          f"({exc}); {ACCEPTED}") from exc
    except ValueError:
        pass  # no signature to inspect (some builtins): find out on the float reference
    if kwargs:
        from hydra.utils import instantiate

        function = instantiate({**_plain(metric), "_partial_": True})
    return Scorer(str(target), function)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _locate(target: Any) -> Any:
    """Import ``package.module.attribute`` (Hydra's ``get_object`` logs its errors on stderr; this does not)."""
    if not isinstance(target, str) or "." not in target.strip("."):
        raise ConfigError(f"objective.metric._target_ = {target!r} is not a dotted path; {ACCEPTED}")
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise ConfigError(f"objective.metric._target_ = {target!r} cannot be imported ({exc}); {ACCEPTED}") from exc
        except Exception as exc:
            raise ConfigError(f"objective.metric._target_ = {target!r} cannot be imported ({type(exc).__name__}: {exc}); "
                              f"{ACCEPTED}") from exc
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            raise ConfigError(f"objective.metric._target_ = {target!r}: module '{module_name}' has no "
                              f"'{'.'.join(parts[split:])}'; {ACCEPTED}") from None
        if not callable(obj):
            raise ConfigError(f"objective.metric._target_ = {target!r} is not callable; {ACCEPTED}")
        return obj
    raise ConfigError(f"objective.metric._target_ = {target!r} cannot be imported "
                      f"(no module '{parts[0]}'; is it on PYTHONPATH?); {ACCEPTED}")
