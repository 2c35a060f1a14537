"""Command-line checks that run before Hydra starts: one-line errors, exit code 2, nothing written.

Hydra reports a bad override over several lines and only after creating its output directory; this
composes the same config first, validates it, and reports the first problem on one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from litesweep.objectives.errors import LitesweepError
from litesweep.search import config as schema

EXIT_BAD_INPUT = 2
# Flags that make Hydra print or inspect rather than run: leave them to Hydra itself.
_HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--shell-completion", "-sc")


def _accepted_keys(full_key: str) -> list[str]:
    node: type | None = schema.LitesweepConfig
    for part in full_key.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if node and dataclasses.is_dataclass(node) else {}
        factory = fields[part].default_factory if part in fields else dataclasses.MISSING
        default = factory() if callable(factory) else None
        node = type(default) if dataclasses.is_dataclass(default) else None
    return sorted(f.name for f in dataclasses.fields(node)) if node and dataclasses.is_dataclass(node) else []


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "bool": "true or false",
               "String": "a string"}


def describe(exc: BaseException) -> str:
    """One line naming the bad key or value and what is accepted."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for err in chain:
        if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and err.full_key:
            keys = _accepted_keys(err.full_key)
            hint = f"; accepted keys here: {keys}" if keys else ""
            return f"unknown config key '{err.full_key}'{hint}"
        if isinstance(err, ValidationError) and getattr(err, "full_key", None):
            first = str(err).splitlines()[0]
            wanted = re.search(r"converted to (\w+)", first) or re.search(r"is not a valid (bool)", first)
            accepted = (_TYPE_WORDS.get(wanted.group(1), f"a value of type {wanted.group(1)}") if wanted
                        else "the type search/config.py gives it")
            return f"bad value for config key '{err.full_key}': {first}; accepted: {accepted}"
    text = str(exc)
    if "Could not find" in text and "Available options" in text:
        missing = text.split("Could not find", 1)[1].splitlines()[0].strip()
        options = text.split("Available options", 1)[1].split("Config search path")[0].splitlines()[1:]
        return f"config group option {missing} not found; accepted: {', '.join(o.strip() for o in options if o.strip())}"
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.strip().startswith(("full_key", "object_type", "reference_type"))]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def compose_config(overrides: Sequence[str], conf_dir: str) -> DictConfig:
    """Compose the config the way ``litesweep`` would, without running anything."""
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _split_config_dirs(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The folders given with ``--config-dir``/``-cd`` (as search-path entries) and the other arguments."""
    dirs: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("--config-dir", "-cd"):
            dirs.append(next(args, ""))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return [f"file://{Path(d).resolve()}" for d in dirs], rest


def precheck(argv: Sequence[str], conf_dir: str, prog: str = "litesweep") -> None:
    """Compose and validate the command line's overrides; on a problem print one line and exit 2."""
    if any(a.split("=")[0] in _HYDRA_FLAGS for a in argv) or any(a in ("-m", "--multirun") for a in argv):
        return
    if any(a.split("=")[0] in ("--config-name", "-cn", "--config-path", "-cp") for a in argv):
        return  # another primary config: Hydra composes and reports it
    searchpath, rest = _split_config_dirs(argv)
    overrides = [a for a in rest if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if searchpath:  # a user's config folder (its own groups' options) composes over the package's
        overrides.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    try:
        cfg = compose_config(overrides, conf_dir)
        schema.validate(cfg)
    except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException, LitesweepError) as exc:
        message = str(exc) if isinstance(exc, LitesweepError) else describe(exc)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


class MaskingFormatter(logging.Formatter):
    """Wraps a handler's formatter and masks URI passwords in the finished line (message and traceback)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        from litesweep.search.preflight import mask

        return mask(self.inner.format(record))


def mask_logging() -> None:
    """Mask passwords in every line any configured handler writes (Hydra's console and job log, MLflow's and
    Optuna's own handlers, which do not propagate to the root)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler.formatter, MaskingFormatter):
                handler.setFormatter(MaskingFormatter(handler.formatter))


def mask_hydra_files() -> None:
    """Rewrite the files Hydra saved for this run (``.hydra/*.yaml``, a sweep's ``multirun.yaml``) with passwords masked."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from litesweep.search.preflight import mask

    hydra_cfg = HydraConfig.get()
    paths: list[Path] = []
    if hydra_cfg.output_subdir:
        paths += (Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml")
    if hydra_cfg.mode == RunMode.MULTIRUN:
        paths.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text()
        if mask(text) != text:
            path.write_text(mask(text))


class MaskingStream:
    """A text stream that masks URI passwords in everything written through it; all else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` masked; returns ``len(text)`` as callers expect."""
        from litesweep.search.preflight import mask

        self.stream.write(mask(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write every line masked."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def masked_std_streams() -> Iterator[None]:
    """Mask ``sys.stdout`` and ``sys.stderr`` for the block: prints by any library and Hydra's own error report
    (``Error executing job with overrides: [...]`` and the traceback) included."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, MaskingStream) else MaskingStream(s) for s in saved)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def hydra_entry(task: Callable[[DictConfig], object], prog: str) -> Callable[[], None]:
    """A console entry point running ``task(cfg)`` as a Hydra app over ``conf/``.

    The command line is checked first (``precheck``); a ``LitesweepError`` becomes one masked line and
    exit code 2; Ctrl-C exits 130 after the task has recorded what it was doing. URI passwords are masked
    in everything the app prints or logs and in the files Hydra saves.
    """

    @hydra.main(version_base="1.3", config_path=schema.CONF_DIR, config_name="config")
    def _hydra_main(cfg: DictConfig) -> None:
        from litesweep.search.console import configure
        from litesweep.search.preflight import mask

        configure(bool(cfg.get("verbose", False)))  # first: MLflow reads its log level when first imported
        mask_logging()
        mask_hydra_files()
        if "tracking" in cfg:
            from litesweep.search.tracking import quiet_run_urls

            quiet_run_urls(str(cfg.tracking.uri))
        try:
            task(cfg)
        except LitesweepError as exc:
            print(f"{prog}: error: {mask(str(exc))}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; finished trials are kept and the running one will be retried: "
                  "run the same command to resume", file=sys.stderr)
            sys.exit(130)

    def main() -> None:
        schema.register_configs()
        if any(a in ("--help", "-h") for a in sys.argv[1:]) and not any(a.startswith("hydra/help=") for a in sys.argv):
            sys.argv.append(f"hydra/help={prog}")  # conf/hydra/help/<prog>.yaml: what this command is and does
        with masked_std_streams():
            precheck(sys.argv[1:], schema.CONF_DIR, prog=prog)
            try:
                _hydra_main()
            except SystemExit:
                raise
            # HYDRA_FULL_ERROR=1 re-raises: print the traceback while the streams still mask secrets, then exit.
            except BaseException:  # noqa: BLE001 - deliberate: traceback printed under masked streams, then exit(1)
                traceback.print_exc()
                sys.exit(1)

    main.__doc__ = f"Console entry point ``{prog}``."
    return main
