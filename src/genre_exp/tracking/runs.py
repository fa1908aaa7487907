"""One MLflow run per job: opened with its owner's process tags, closed FINISHED, FAILED or
KILLED on any exit; and the FAILED run a sweep's job gets when it fails before its own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from genre_exp.tracking.liveness import process_tags
from genre_exp.tracking.tags import ERROR_TAG, PARENT_ENV, REAPED_TAG, SWEEP_TAG

_RUN_OF_ERROR = "_genre_exp_run_id"


def sweep_parent() -> str | None:
    """The sweep parent run this job belongs to, if it is a sweep's job."""
    return os.environ.get(PARENT_ENV) or None


def recorded_in(exc: BaseException) -> str | None:
    """The run a failure was recorded in (FAILED, with the error as a tag), or None if it
    happened before the job's run started."""
    return getattr(exc, _RUN_OF_ERROR, None)


@contextlib.contextmanager
def job_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    log_file: Path | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """One MLflow run for one job (yields its id), closed FINISHED, FAILED (with the error as
    a tag) or KILLED on any exit, so no run is left RUNNING by a job that can still act. Inside
    a sweep it is the sweep parent's child. With ``resume_run_id`` the job continues that run.
    The run records this process as its owner, for ``liveness.reap``."""
    import mlflow

    tags = dict(tags) | process_tags()
    parent = sweep_parent()
    if resume_run_id:
        active = mlflow.start_run(run_id=resume_run_id, tags=tags)
        # Why the killed job ended no longer describes the run once it goes on.
        for stale in {ERROR_TAG, REAPED_TAG} & set(active.data.tags):
            mlflow.delete_tag(stale)
    else:
        if parent:
            tags |= {"mlflow.parentRunId": parent, SWEEP_TAG: parent}
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    status = "FINISHED"
    try:
        yield active.info.run_id
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException as exc:
        status = "FAILED"
        mlflow.set_tag(ERROR_TAG, f"{type(exc).__name__}: {exc}"[:5000])
        setattr(exc, _RUN_OF_ERROR, active.info.run_id)
        raise
    finally:
        if log_file is not None and log_file.is_file():
            with contextlib.suppress(Exception):
                # A resumed run keeps the killed job's log beside the resuming job's.
                mlflow.log_artifact(str(log_file), "hydra/resumed" if resume_run_id else "hydra")
        mlflow.end_run(status)


def record_failed_job(
    tracking_uri: str, experiment_name: str, run_name: str, error: str, tags: Mapping[str, str]
) -> None:
    """A FAILED run in the sweep's group for a job that failed before its own run started, so
    a sweep's table shows every job."""
    import mlflow

    parent = sweep_parent()
    if not parent:
        return
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return
    failed = client.create_run(
        experiment.experiment_id,
        run_name=run_name,
        tags={
            **tags,
            "mlflow.parentRunId": parent,
            SWEEP_TAG: parent,
            ERROR_TAG: error[:5000],
        },
    )
    client.set_terminated(failed.info.run_id, "FAILED")
