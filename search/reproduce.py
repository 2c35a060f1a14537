"""A study's recorded config, and the command-line overrides that rebuild it from litesweep's defaults.

Every sweep logs its resolved config as ``config.yaml`` on the study's parent run (``Sweep.open_parent_run``).
``reproduce_overrides`` turns that record back into Hydra overrides: for each config group, the option
under ``conf/<group>/`` closest to the recorded node (``group=option`` when it is not the default), then
``group.key=value`` for every key that still differs. ``litesweep-pick`` prints them in the model card's
reproduce command, so ``litesweep-apply`` rebuilds a policy with the study's own settings, not the pick
command's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from litesweep.search.config import CONF_DIR
from litesweep.search.ledger import CONFIG_FILE
from litesweep.search.preflight import mask

#: Top-level nodes left out: they name or drive a command (the study, pick, apply, audit), not the model.
SKIPPED: Final = ("study", "pick", "apply", "audit", "progress", "hydra")
#: Groups settled first: the others interpolate their paths (``${paths.cache_dir}/latency``, ``tracking.uri``).
FIRST: Final = ("paths",)

Composer = Callable[[list[str]], DictConfig]


def recorded_config(client: Any, parent_run_id: str) -> DictConfig | None:
    """The ``config.yaml`` a sweep logged on the study's parent run, or None (a study from before it was logged).

    Args:
        client: an ``MlflowClient`` on the study's tracking store.
        parent_run_id: the study's parent run.
    """
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent_run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError):
            return None
        loaded = OmegaConf.load(path)
    return loaded if isinstance(loaded, DictConfig) else None


def reproduce_overrides(recorded: DictConfig | Mapping[str, Any], conf_dir: str = CONF_DIR) -> list[str]:
    """The Hydra overrides that compose ``recorded`` from ``conf_dir``'s defaults (secrets masked).

    Args:
        recorded: a resolved config (``config.yaml`` of a parent run, or a composed config).
        conf_dir: the config directory the overrides are relative to.

    Returns:
        ``group=option`` for each group whose closest option is not the default, then ``group.key=value``
        for each key that still differs (``+key=...``/``~key`` for a key a free-form mapping such as
        ``space.layers`` lacks or has too many). ``study``, ``pick``, ``apply``, ``audit``, ``progress``
        and ``hydra`` are left out; a key today's schema no longer has (an older study's) is left out too.
    """
    return list(_overrides(OmegaConf.to_yaml(OmegaConf.create(_plain(recorded))), conf_dir))


@functools.lru_cache(maxsize=16)
def _overrides(recorded_yaml: str, conf_dir: str) -> tuple[str, ...]:
    """``reproduce_overrides`` of a config given as YAML (composing takes a second or two: done once a record)."""
    wanted = _plain(OmegaConf.create(recorded_yaml))
    keys = [k for k in FIRST if k in wanted] + [k for k in wanted if k not in FIRST and k not in SKIPPED]
    overrides: list[str] = []
    with _composer(conf_dir) as (compose, defaults, cfg):
        for key in keys:
            if (Path(conf_dir) / key).is_dir() and diff(wanted[key], cfg, key):
                option, cfg = _closest_option(compose, overrides, key, wanted[key], cfg, conf_dir, defaults.get(key))
                if option != defaults.get(key):
                    overrides.append(f"{key}={option}")
        _fix_keys(compose, overrides, [k for k in keys if k in cfg], wanted, cfg)
    order = {key: i for i, key in enumerate(keys)}  # group by group, the option before its keys
    ranked = sorted(overrides, key=lambda o: (order.get(o.lstrip("+~").split("=")[0].split(".")[0], len(order)),
                                              "." in o.split("=")[0]))
    return tuple(mask(o) for o in ranked)


def format_value(value: Any) -> str:
    """``value`` in Hydra's override syntax: ``null``, ``true``, ``[a,b]``, ``{k:v}``, strings quoted when needed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) if not math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and _parses_to(text, text):
        return text
    # Hydra's quoted strings: backslashes are literal except before a quote or at the end, where they are doubled
    return "'" + re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'") + "'"


def _parses_to(text: str, value: Any) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(f"k={text}").value()
    except HydraException:
        return False
    return type(parsed) is type(value) and parsed == value


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


@contextlib.contextmanager
def _composer(conf_dir: str) -> Iterator[tuple[Composer, dict[str, str], DictConfig]]:
    """A function composing ``conf_dir``'s config with overrides, the default option of each group, and the
    default config. Works inside a running Hydra app too (its global state is restored)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from litesweep.search.config import register_configs

    register_configs()
    running = GlobalHydra.instance().hydra  # set inside @hydra.main (litesweep-pick)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            base = compose("config", return_hydra_config=True)
            defaults = {str(k): str(v) for k, v in base.hydra.runtime.choices.items() if not str(k).startswith("hydra")}
            with open_dict(base):
                del base["hydra"]
            yield (lambda overrides: compose("config", overrides=list(overrides))), defaults, base
    finally:
        if running is not None:
            GlobalHydra.instance().hydra = running


def _closest_option(compose: Composer, overrides: list[str], group: str, wanted: Any, cfg: DictConfig, conf_dir: str,
                    default: str | None) -> tuple[str | None, DictConfig]:
    """The option of ``group`` whose node differs from ``wanted`` in the fewest keys (the default on a tie),
    and the config composed with it. The option named like the record (``data.name``) is tried first."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    options = sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))
    hint = wanted.get("name") if isinstance(wanted, Mapping) else None
    ranked: list[tuple[int, bool, str | None, DictConfig]] = [(len(diff(wanted, cfg, group)), False, default, cfg)]
    for option in sorted(options, key=lambda o: o != hint):
        if option == default:
            continue
        try:
            composed = compose([*overrides, f"{group}={option}"])
        except (HydraException, OmegaConfBaseException):  # an option that needs a value the record has (a path, say)
            continue
        ranked.append((len(diff(wanted, composed, group)), True, option, composed))
        if ranked[-1][0] == 0:
            break
    best = min(ranked, key=lambda r: r[:2])
    return best[2], best[3]


def _fix_keys(compose: Composer, overrides: list[str], keys: list[str], wanted: Mapping[str, Any], cfg: DictConfig) -> None:
    """Append ``key.sub=value`` overrides until the composed config matches the record: values set directly
    first, so those interpolated from them (``paths.store_dir`` from ``paths.output_dir``) need no override."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for _ in range(64):  # each pass fixes at least one key; a config has far fewer that differ
        pending = [d for key in keys for d in diff(wanted[key], cfg, key)]
        if not pending:
            return
        direct = [o for path, o in pending if not _interpolated(cfg, path)]
        batch = direct or [pending[0][1]]  # then one interpolated value at a time, upstream (paths) first
        try:
            cfg = compose([*overrides, *batch])
        except (HydraException, OmegaConfBaseException):
            batch = [o for o in batch if _composes(compose, [*overrides, o])]  # the schema refuses some: left out
            cfg = compose([*overrides, *batch])
        overrides.extend(batch)


def _composes(compose: Composer, overrides: list[str]) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        compose(overrides)
    except (HydraException, OmegaConfBaseException):
        return False
    return True


def _interpolated(cfg: DictConfig, path: str) -> bool:
    parent, _, key = path.lstrip("+~").rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and key in node and OmegaConf.is_interpolation(node, key)


def diff(wanted: Any, cfg: DictConfig, path: str) -> list[tuple[str, str]]:
    """``(key, override)`` pairs that turn the node at ``path`` of the composed ``cfg`` into ``wanted``.

    Mappings are compared key by key. A key missing on one side is added (``+``) or removed (``~``) only
    in a free-form mapping (``space.layers``): in a schema node it is a key of another litesweep version.
    """
    node = OmegaConf.select(cfg, path, throw_on_missing=False)
    if isinstance(wanted, Mapping) and isinstance(node, DictConfig):
        free = OmegaConf.get_type(node) in (dict, None)
        found: list[tuple[str, str]] = []
        for key, value in wanted.items():
            if key in node:
                found += diff(value, cfg, f"{path}.{key}")
            elif free:
                found.append((f"{path}.{key}", f"+{path}.{key}={format_value(value)}"))
        extra = [str(key) for key in node if free and str(key) not in wanted]
        return found + [(f"{path}.{key}", f"~{path}.{key}") for key in extra]
    return [] if _same(wanted, _plain(node)) else [(path, f"{path}={format_value(wanted)}")]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)
