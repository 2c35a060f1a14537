"""What a command prints: its own lines, the progress bar, warnings a user can act on; with ``verbose=true``
every library's output too.

``configure`` runs first in every litesweep process (each command after Hydra has set up logging, each
worker). Off, it silences the output litesweep's own calls make libraries print, each where it arises:

- Python warnings litesweep triggers itself, by category or message (``QUIET_WARNINGS``): Optuna's
  ``ExperimentalWarning`` (heartbeats, hypervolume plots, TPE's ``group``) and the importance evaluator's
  notes on few trials;
- Optuna's and MLflow's INFO lines (``A new study created...``, ``Creating initial MLflow database tables``);
- litesweep's own INFO log lines go to the job log file only (``outputs/<study>/<time>/<command>.log``);
- TensorFlow's C++ logs and the native prints no setting reaches: ``litesweep.objectives.quiet``.

Warnings and errors always reach the console; nothing filters stderr as a whole.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from litesweep.objectives.quiet import set_verbose, verbose

#: (message regex, matched from its start) -> category, for warnings raised inside the libraries litesweep calls.
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # optuna.importance.PedAnovaImportanceEvaluator, on each report's importances (litesweep's targets are
    # signed on purpose, and a young study has few trials)
    ("PedAnovaImportanceEvaluator computes the importances", UserWarning),
    ("The number of trials is too small to compute importances", UserWarning),
    ("Target and region quantiles select the same set of trials", UserWarning),
    ("Some regimes for parameter", UserWarning),
)


def configure(on: bool) -> None:
    """Set ``verbose`` to ``on`` for this process and those it starts, and quieten the libraries when off."""
    set_verbose(on)
    if on:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is first imported
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger().handlers:  # Hydra's console handler; its file handler keeps INFO
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))


def start_line(cfg: Any, sweep: Any, resumed: bool, finished: int) -> str:
    """One line: the study and how far it is, its stores, the data and its splits, the base model."""
    from litesweep.search.preflight import mask

    data, training = sweep.bench.data, sweep.training
    model = cfg.model.get("path") or cfg.model.name
    trained = "cached" if training.get("cached") else f"trained {training.get('epochs', 0)} epochs"
    return (f"litesweep: study '{sweep.study.study_name}' {'resumed' if resumed else 'created'} ({finished}/{cfg.study.n_trials} "
            f"trials finished) | storage {mask(str(cfg.study.storage))} | tracking {mask(str(cfg.tracking.uri))} | data "
            f"{data.name} (train {len(data.y_train)}, val {len(data.y_val)}, test {len(data.y_test)}) | base model {model} "
            f"({trained})")


def progress_bar(cfg: Any, finished: int) -> Any:
    """The study's one progress bar: trials finished of ``study.n_trials``, ETA, and what ``advance`` adds."""
    from tqdm.auto import tqdm

    return tqdm(total=cfg.study.n_trials, initial=min(finished, cfg.study.n_trials), desc="trials", unit="trial",
                disable=not cfg.progress, file=sys.stdout, dynamic_ncols=True)


def advance(bar: Any, n_trials: int, finished: int, front: int, last: str) -> None:
    """Move the bar to ``finished`` trials, with the front's size and the last trial's state."""
    bar.n = min(finished, n_trials)
    bar.set_postfix(front=front, last=last, refresh=False)
    bar.refresh()


class _AboveBar(logging.Handler):
    """A console handler's lines, written with ``tqdm.write`` so that the bar is redrawn below them."""

    def __init__(self, console: logging.StreamHandler) -> None:
        super().__init__(console.level)
        self.setFormatter(console.formatter)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=self.console.stream)


def with_bar(bar: Any, work: Callable[[], None]) -> None:
    """Run ``work`` with the console's log lines written above the bar rather than through it."""
    root = logging.getLogger()
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)  # a console's, not a test's capture or a file
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and h.stream in streams]
    if bar.disable or not consoles:
        work()
        return
    saved = list(root.handlers)
    root.handlers = [_AboveBar(h) if h in consoles else h for h in saved]
    try:
        work()
    finally:
        root.handlers = saved


__all__ = ["QUIET_WARNINGS", "advance", "configure", "progress_bar", "start_line", "verbose", "with_bar"]
