"""Several worker processes on one machine sharing a study: each builds its own ``Sweep`` and runs the same
trial loop as a single-process sweep, on its share of the cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from litesweep.objectives.errors import LitesweepError
from litesweep.search.space import SearchSpace
from litesweep.search.sweep import Sweep, log


def run_workers(cfg: DictConfig, space: SearchSpace, parent_run_id: str, on_tick: Callable[[], None] | None = None) -> None:
    """Run ``study.n_workers`` worker processes on the study, each with its share of the cores.

    Workers load the already-trained base model from the cache and join the study's parent run. ``on_tick``
    is called every second while they run (the study's one progress bar follows the storage).

    Raises:
        LitesweepError: a worker ended with an error.
    """
    workers = int(cfg.study.n_workers)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)  # the cores this process may use, not the host's
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow is not fork-safe
    resolved = cfg.copy()
    OmegaConf.resolve(resolved)  # a worker has no Hydra context to resolve ${hydra:...}; the schema types stay
    processes = [context.Process(target=_worker, args=(resolved, space, parent_run_id, threads), name=f"litesweep-worker-{i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        while process.is_alive():
            process.join(timeout=1.0)
            if on_tick is not None:
                on_tick()
    bad = [p.name for p in processes if p.exitcode != 0]
    if bad:
        raise LitesweepError(f"worker(s) {bad} ended with an error; the study keeps every finished trial")


def _worker(cfg: DictConfig, space: SearchSpace, parent_run_id: str, threads: int) -> None:
    """One worker process: the same trial loop as a single-process sweep."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from litesweep.objectives.compat import limit_threads

    from litesweep.objectives.quiet import verbose
    from litesweep.search.cli import MaskingStream, mask_logging
    from litesweep.search.console import configure

    logging.basicConfig(level=logging.INFO if verbose() else logging.WARNING)
    configure(verbose())  # inherited from the command (LITESWEEP_VERBOSE): its warning filters, here too
    limit_threads(threads)
    # A spawned process: none of the parent's masking came with it (its crash traceback goes to stderr too).
    sys.stdout, sys.stderr = MaskingStream(sys.stdout), MaskingStream(sys.stderr)
    mask_logging()
    sweep = Sweep(cfg, seed_offset=os.getpid(), space=space)  # the space as the parent left it (narrowed, say)
    sweep.tracker.attach(parent_run_id)
    name = multiprocessing.current_process().name

    def on_trial_end(state: TrialState, finished: int) -> None:
        sweep.update_front()
        log.info("%s: trial %s, %d/%d finished", name, state.name, finished, cfg.study.n_trials)  # the parent's bar shows it

    sweep.loop(on_trial_end)
