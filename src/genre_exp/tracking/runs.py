"""One MLflow run per job: opened with its owner's process tags, closed FINISHED, FAILED or
KILLED on any exit (or, when the tracking server is lost, left to be reaped); the FAILED run a
sweep's job gets when it fails before its own; and closing the runs of a job that ended without
closing them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from genre_exp.errors import TrackingError
from genre_exp.tracking.liveness import process_tags
from genre_exp.tracking.store import check_reachable
from genre_exp.tracking.tags import ERROR_TAG, PARENT_ENV, REAPED_TAG, SWEEP_TAG

_RUN_OF_ERROR = "_genre_exp_run_id"
_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
# What becomes of a run whose job lost its tracking server (liveness.reap).
_LEFT_RUNNING = (
    "it stays RUNNING there until a later run or sweep in its experiment on this host, or "
    "'genre-exp runs --reap', marks it FAILED"
)


def sweep_parent() -> str | None:
    """The sweep parent run this job belongs to, if it is a sweep's job."""
    return os.environ.get(PARENT_ENV) or None


def recorded_in(exc: BaseException) -> str | None:
    """The run a failure happened in (recorded FAILED with the error as a tag, or left to be
    reaped when the tracking server was lost), or None if it happened before the job's run
    started."""
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
    run_id = active.info.run_id
    status = "FINISHED"
    lost = None
    try:
        yield run_id
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        lost = _server_lost()
        raise
    except BaseException as exc:
        status = "FAILED"
        lost = _server_lost()
        if lost is None:
            mlflow.set_tag(ERROR_TAG, f"{type(exc).__name__}: {exc}"[:5000])
            setattr(exc, _RUN_OF_ERROR, run_id)
            raise
        ended = _end_without_waiting(status, lost)
        error = TrackingError(
            f"{lost} during run {run_id}; "
            + ("it ended FAILED" if ended else _LEFT_RUNNING)
            + f"; training.resume={run_id} continues it"
        )
        setattr(error, _RUN_OF_ERROR, run_id)
        raise error from None
    finally:
        if lost is None:
            if log_file is not None and log_file.is_file():
                with contextlib.suppress(Exception):
                    # A resumed run keeps the killed job's log beside the resuming job's.
                    mlflow.log_artifact(
                        str(log_file), "hydra/resumed" if resume_run_id else "hydra"
                    )
            mlflow.end_run(status)
        elif status == "KILLED":
            _end_without_waiting(status)


def _server_lost() -> str | None:
    """Why the tracking server does not answer (one line naming it), or None when it does or
    the store is no server. Asked once a job fails or is stopped: each call to a server that is
    gone retries for minutes, and closing a run makes several."""
    import mlflow

    try:
        check_reachable(mlflow.get_tracking_uri(), timeout=5.0)
    except TrackingError as exc:
        return str(exc)
    return None


def _end_without_waiting(status: str, error: str | None = None) -> bool:
    """End the active run ``status`` (with ``error`` as its error tag) on a server just found
    unreachable: one try each, without MLflow's retries; whether the run ended. Either way the
    run is no longer active here, so MLflow's exit handler does not retry ending it."""
    import mlflow

    saved = os.environ.get(_RETRIES)
    os.environ[_RETRIES] = "0"
    try:
        if error is not None:
            with contextlib.suppress(Exception):
                mlflow.set_tag(ERROR_TAG, error[:5000])
        mlflow.end_run(status)
    except Exception:
        return False
    finally:
        if saved is None:
            del os.environ[_RETRIES]
        else:
            os.environ[_RETRIES] = saved
    return True


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


def fail_job_runs(
    tracking_uri: str, tags: Mapping[str, str], reason: str, statuses: tuple[str, ...]
) -> list[str]:
    """The runs of this sweep (the parent run named in the environment) carrying ``tags``: the
    ids of all of them, once those whose status is one of ``statuses`` (a job that ended
    without closing its run left it RUNNING; one stopped by a signal ended it KILLED) have
    ended FAILED with ``reason`` as their error."""
    import mlflow
    from mlflow.entities import RunTag

    from genre_exp.tracking.queries import quoted

    parent = sweep_parent()
    if not parent:
        return []
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id
    wanted = {SWEEP_TAG: parent, **tags}
    found = client.search_runs(
        [experiment_id],
        " and ".join(f"tags.`{k}` = '{quoted(v)}'" for k, v in wanted.items()),
        max_results=1000,
    )
    for run in found:
        if run.info.status in statuses:
            client.log_batch(run.info.run_id, tags=[RunTag(ERROR_TAG, reason[:5000])])
            client.set_terminated(run.info.run_id, "FAILED")
    return [run.info.run_id for run in found]
