"""The incremental front is Optuna's own front, trial by trial: random studies with ties, constraints, and
trials completing out of order."""

from __future__ import annotations

import itertools
import random

import optuna
import pytest

from litesweep.search.pareto import FrontKeeper, front


@pytest.mark.parametrize("seed", range(6))
def test_the_incremental_front_equals_optunas_after_every_trial(seed: int) -> None:
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    keeper = FrontKeeper(study.directions)
    constrained = seed % 2 == 1
    pending: list[optuna.Trial] = []
    changes = 0
    previous: list[int] = []
    for _ in range(120):
        pending.append(study.ask())
        if rng.random() < 0.6 or len(pending) > 3:  # trials finish out of order, as with several workers
            trial = pending.pop(rng.randrange(len(pending)))
            # Coarse values: ties and duplicates happen, as with equal sizes or accuracies.
            values = [rng.randint(0, 20) / 20, rng.choice([1000, 2000, 3000, 4000]), rng.randint(1, 6) / 10]
            if constrained:
                trial.set_constraint("accuracy_drop", rng.uniform(-1, 0.5))
            if rng.random() < 0.1:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, values)
        kept = [t.number for t in keeper.update(study)]
        assert kept == [t.number for t in front(study)]
        changes += kept != previous
        previous = kept
    assert changes > 5, "the front changed along the way"


def test_front_tags_equal_the_studys_front_after_every_trial_and_the_audit_agrees(tmp_path) -> None:
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from litesweep.search.config import validate
    from litesweep.search.ledger import RUN_ID_ATTR, TAG_PARETO, TAG_ROLE
    from litesweep.search.sweep import Sweep
    from tests.conftest import QUICK_OVERRIDES, compose_quick

    overrides = ["space=ptq", "study.n_trials=30", "study.presets=false", "tracking.report_interval_s=1e9"]
    cfg = compose_quick(tmp_path, *overrides)  # no report refresh, so no reconciling read of the tags mid-study
    validate(cfg)
    sweep = Sweep(cfg)
    sweep.open_parent_run()
    sweep.first_passes()
    client = MlflowClient(cfg.tracking.uri)
    fronts: list[frozenset[str]] = []

    def check(state, finished) -> None:
        kept = {t.user_attrs[RUN_ID_ATTR] for t in sweep.update_front()}
        optunas = {t.user_attrs[RUN_ID_ATTR] for t in sweep.study.best_trials}
        tagged = {r.info.run_id for r in client.search_runs(
            [sweep.tracker.experiment_id], f"tags.`{TAG_ROLE}` = 'trial' and tags.`{TAG_PARETO}` = 'true'", max_results=1000)}
        assert kept == optunas == tagged, finished
        fronts.append(frozenset(optunas))

    sweep.loop(check)
    sweep.finish()
    sweep.tracker.close_study_run("FINISHED")
    assert len(fronts) == 30 and len(set(fronts)) > 3, "the front changed along the study"
    assert any(before - after for before, after in itertools.pairwise(fronts)), "a trial left the front at least once"
    audit = subprocess.run([sys.executable, "-c", "from litesweep.search.audit import main; main()", *QUICK_OVERRIDES,
                            f"paths.output_dir={tmp_path}", *overrides, "audit.remeasure=false"],
                           capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0 and "0 problem(s)" in audit.stdout, audit.stdout[-2000:] + audit.stderr[-2000:]
