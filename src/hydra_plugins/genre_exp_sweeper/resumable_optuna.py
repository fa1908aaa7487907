"""Hydra's Optuna sweeper, made resumable.

The stock sweeper runs ``n_trials`` more trials every time it is started on an existing study,
and a trial whose process was killed stays RUNNING in the study for ever. Here ``n_trials``
counts the whole study: after an interruption, the same command marks the killed trials failed
and runs only the trials still missing.
"""

from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


def remaining_trials(storage: str, study_name: str, n_trials: int) -> int:
    """Trials still to run for a study of ``n_trials``; fails the trials a kill left RUNNING.

    Only one sweep may drive a study at a time: a trial RUNNING now is taken to be orphaned.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return n_trials
    trials = study.get_trials(deepcopy=False)
    orphans = [t.number for t in trials if t.state == TrialState.RUNNING]
    for number in orphans:
        study.tell(number, state=TrialState.FAIL)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    log.info(
        "Optuna study %r: %d of %d trials done%s; %d to run",
        study_name,
        done,
        n_trials,
        f", {len(orphans)} interrupted trial(s) marked failed" if orphans else "",
        max(0, n_trials - done),
    )
    return max(0, n_trials - done)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.storage and impl.study_name:
            remaining = remaining_trials(impl.storage, impl.study_name, impl.n_trials)
            if remaining < impl.n_trials:
                # A seeded sampler restarts its random stream in every process, so a resumed
                # study would draw its first trials' parameters again.
                impl.sampler.reseed_rng()
            impl.n_trials = remaining
        return super().sweep(arguments)
