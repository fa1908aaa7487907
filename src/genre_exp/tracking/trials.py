"""The MLflow side of a job of an Optuna search: its run names its trial, and a pruned run says
so (it ends KILLED, like a run the user stopped, not FAILED)."""

from __future__ import annotations

from collections.abc import Mapping

# The study and the trial number the run's job was.
STUDY_TAG = "optuna_study"
TRIAL_TAG = "optuna_trial"
# PRUNED on a run the search's pruner stopped, with the epoch it stopped after (from 0, as the
# steps of the run's per-epoch metrics and of the trial's reported values).
STATE_TAG = "optuna_state"
PRUNED_AT_TAG = "pruned_at_epoch"


def tag_last_run(tracking_uri: str, tags: Mapping[str, str]) -> str | None:
    """Tag the run this process started last (the job's, now ended); returns its id, or None
    if the process started none."""
    import mlflow
    from mlflow.entities import RunTag

    client = mlflow.MlflowClient(tracking_uri)
    run = mlflow.last_active_run()
    if run is None:
        return None
    client.log_batch(run.info.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    return run.info.run_id
