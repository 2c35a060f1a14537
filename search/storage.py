"""Optuna storages and samplers: journal files on one machine, SQLite or PostgreSQL across machines.

The few Optuna internals litesweep needs are wrapped here, one function each, with the reason.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial

from litesweep.objectives.errors import ConfigError
from litesweep.search.config import SAMPLERS, StudyConfig
from litesweep.search.ledger import FINISHED_STATES, OBJECTIVES_ATTR
from litesweep.search.preflight import mask
from litesweep.search.recovery import RetryAndRemember

HEARTBEAT_INTERVAL_S = StudyConfig.heartbeat_interval_s
HEARTBEAT_GRACE_S = StudyConfig.heartbeat_grace_s


def make_storage(url: str, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 heartbeat_grace_s: float = HEARTBEAT_GRACE_S) -> BaseStorage:
    """A database URL gives an RDB storage (with Optuna's heartbeat, so trials of a dead worker on any
    machine are failed and retried once); any other string is a journal file path (Optuna's
    recommendation for several processes on one machine; dead local workers are found by pid).
    """
    if "://" in url:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # the heartbeat arguments are experimental; said once here, not per process
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=max(1, round(heartbeat_interval_s)),
                        grace_period=max(1, round(heartbeat_grace_s)), heartbeat_stale_trial_callback=RetryAndRemember(),
                    )
            except Exception:  # workers starting together race to create Optuna's tables
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(name: str, seed: int, n_startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded. Samplers read trial constraints set with ``set_constraint``."""
    startup: dict[str, Any] = {} if n_startup_trials is None else {"n_startup_trials": n_startup_trials}
    if name == "tpe":
        # group=True: conditional parameters (ptq_mode only for integer layers...) are modelled per subspace.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, **startup)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)  # torch is checked by config.validate
    raise ConfigError(f"study.sampler = {name!r} is not supported; accepted: {sorted(SAMPLERS)}")


def open_study(name: str, storage: str, sampler: str, seed: int, directions: Mapping[str, str],
               n_startup_trials: int | None = None, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
               heartbeat_grace_s: float = HEARTBEAT_GRACE_S) -> optuna.Study:
    """Create the study, or load it when it exists (its objectives must match the config)."""
    backend = make_storage(storage, heartbeat_interval_s, heartbeat_grace_s)
    existing = {s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)}
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in directions.values()]
    if name not in existing:
        try:
            study = optuna.create_study(study_name=name, storage=backend, sampler=make_sampler(sampler, seed, n_startup_trials),
                                        directions=wanted)
            study.set_user_attr(OBJECTIVES_ATTR, list(directions))
            return study
        except optuna.exceptions.DuplicatedStudyError:
            pass  # workers started together: another one created it first
    study = optuna.load_study(study_name=name, storage=backend)
    stored = study.user_attrs.get(OBJECTIVES_ATTR)
    if (stored is not None and stored != list(directions)) or study.directions != wanted:
        raise ConfigError(f"study '{name}' exists with objectives {stored}, not {list(directions)}; "
                          "accepted: the same study.objectives and study.directions, or another study.name")
    # A resumed study reseeds with its trial count, so it does not replay its first suggestions.
    study.sampler = make_sampler(sampler, seed + len(study.trials), n_startup_trials)
    return study


def find_study(name: str, storage: str) -> optuna.Study | None:
    """The study when it exists, else None; creates no file (a journal or SQLite file that is not there
    means no study)."""
    local = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None if "://" in storage else storage
    if local is not None and not Path(local).exists():
        return None
    try:
        return load_existing_study(name, storage)
    except ConfigError:
        return None


def load_existing_study(name: str, storage: str) -> optuna.Study:
    """An existing study, for the commands that read one (pick, audit).

    Raises:
        ConfigError: no such study in that storage (the ones there are named).
    """
    backend = make_storage(storage) if ("://" in storage or Path(storage).exists()) else None
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)) if backend else []
    if backend is None or name not in names:
        raise ConfigError(f"study.name = {name!r} is not in {mask(storage)}; accepted: {names}")
    return optuna.load_study(study_name=name, storage=backend)


def count_finished(study: optuna.Study) -> int:
    """COMPLETE and PRUNED trials: what ``study.n_trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


# --- Optuna internals, one wrapper each ---------------------------------------------------------------


def backend_of(study: optuna.Study) -> BaseStorage:
    """The study's storage. Optuna has no public accessor, and recovery must write trials of workers that died
    (``BaseStorage``'s own methods are public API)."""
    return study._storage


def trial_id(study: optuna.Study, trial: Trial | FrozenTrial) -> int:
    """A trial's storage id, from public storage API (``Trial._trial_id`` is private)."""
    storage = backend_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), trial.number)


def ask(study: optuna.Study) -> Trial:
    """``study.ask()``, without Optuna's warning that heartbeats belong to ``study.optimize``: litesweep runs
    its trials by ask-and-tell and beats for them itself (``heartbeat``), so the warning would print every trial."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask()


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: Trial) -> Iterator[None]:
    """Beat for ``trial`` while the block runs (RDB storages; a no-op otherwise).

    Optuna beats only inside ``study.optimize``; ask-and-tell has no public heartbeat, so this uses its thread.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    if not is_heartbeat_enabled(backend_of(study)):  # journal storages: no id lookup on every trial
        yield
        return
    thread = get_heartbeat_thread(trial_id(study, trial), backend_of(study))
    thread.start()
    try:
        yield
    finally:
        thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own stale-trial check (RDB heartbeats older than the grace period, on any machine).

    It is public but marked experimental: its warning would print once per trial and break the progress bar.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
