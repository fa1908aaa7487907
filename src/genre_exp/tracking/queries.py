"""Reading the store back: runs, models, the registry and promotion (for ``predict``,
``promote``, ``compare``, ``data report`` and resuming)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from genre_exp.errors import TrackingError, first_line
from genre_exp.selection import VALIDATION_PARAMS, is_validation_metric, lower_is_better
from genre_exp.tracking.record import register_model
from genre_exp.tracking.store import require_store
from genre_exp.tracking.tags import PARENT_TAG, SWEEP_TAG

MODEL_URI_FORMS = "runs:/<run id>/model, models:/<name>/<version> or models:/<name>@<alias>"
CHAMPION = "champion"


def quoted(value: str) -> str:
    """A value inside a single-quoted MLflow search filter."""
    return value.replace("'", "\\'")


@dataclass(frozen=True)
class RunRecord:
    """What resuming needs to know of a run."""

    run_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]


def get_run(tracking_uri: str, run_id: str, what: str) -> RunRecord:
    """The run ``run_id``; an unknown one is one line starting with ``what``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    require_store(tracking_uri, what)
    try:
        found = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise TrackingError(f"{what}: no such run in {tracking_uri}") from None
    return RunRecord(
        run_id=run_id,
        status=found.info.status,
        params=dict(found.data.params),
        tags=dict(found.data.tags),
    )


def load_model(tracking_uri: str, model_uri: str):
    """The logged pyfunc model behind ``model_uri``; an unknown run, model, version or alias
    is one line naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith(("runs:/", "models:/")):
        raise TrackingError(f"model {model_uri!r}: expected {MODEL_URI_FORMS}")
    require_store(tracking_uri, f"model {model_uri}")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise TrackingError(
            f"model {model_uri}: cannot be loaded from {tracking_uri} ({first_line(exc)})"
        ) from None


@dataclass
class Promotion:
    name: str
    version: str
    run_id: str
    run_name: str
    metric: str
    value: float
    registered_now: bool
    # Validation settings that differ between the runs it was chosen from: param -> values.
    validated_differently: dict[str, list[str]]


def best_by(metric: str) -> Callable:
    """``min`` or ``max``: which end of ``metric`` is the best run."""
    return min if lower_is_better(metric) else max


def promote(
    tracking_uri: str,
    experiment_name: str,
    metric: str,
    model_name: str | None = None,
    sweep_id: str | None = None,
) -> Promotion:
    """Point the ``champion`` alias of ``model_name`` (default: the experiment's name) at the
    model of the best finished run of an experiment, or of one sweep, by ``metric``,
    registering that model first if it is not registered yet."""
    import mlflow

    where = f"--experiment {experiment_name}" + (f" --sweep {sweep_id}" if sweep_id else "")
    require_store(tracking_uri, where)
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"{where}: no such experiment in {tracking_uri}")
    query = "attributes.status = 'FINISHED'"
    if sweep_id:
        query += f" and tags.{SWEEP_TAG} = '{quoted(sweep_id)}'"
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], query, max_results=50000)
        if r.data.tags.get(PARENT_TAG) != "parent" and metric in r.data.metrics
    ]
    if not runs:
        raise TrackingError(f"{where}: no finished run has the metric {metric!r}")
    best = best_by(metric)(runs, key=lambda r: r.data.metrics[metric])
    run_id = best.info.run_id
    name = model_name or experiment_name
    versions = client.search_model_versions(
        f"name = '{quoted(name)}' and run_id = '{run_id}'", max_results=1000
    )
    registered_now = not versions
    if versions:
        version = str(max(int(v.version) for v in versions))
    else:
        logged = client.search_logged_models(
            [experiment.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        )
        if not logged:
            raise TrackingError(
                f"{where}: the best run {run_id} ({metric}={best.data.metrics[metric]:.4g}) "
                "has no logged model (trained with mlflow.log_model=false?)"
            )
        mlflow.set_tracking_uri(tracking_uri)
        version = register_model(logged[-1].model_uri, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(
        name=name,
        version=version,
        run_id=run_id,
        run_name=best.info.run_name,
        metric=metric,
        value=best.data.metrics[metric],
        registered_now=registered_now,
        validated_differently=validated_differently(runs) if is_validation_metric(metric) else {},
    )


def validated_differently(runs: list) -> dict[str, list[str]]:
    """The validation settings whose values differ between ``runs`` (unset: "null")."""
    differ = {}
    for param in VALIDATION_PARAMS:
        values = sorted({r.data.params.get(param, "null") for r in runs})
        if len(values) > 1:
            differ[param] = values
    return differ


def search_runs(
    tracking_uri: str, experiment_name: str, filter_string: str = "", sweep_id: str | None = None
):
    """The job runs of an experiment (sweep parents left out), as MLflow's search gives them
    (a pandas frame)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    require_store(tracking_uri, f"--experiment {experiment_name}")
    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(experiment_name) is None:
        names = [e.name for e in client.search_experiments()]
        raise TrackingError(
            f"--experiment {experiment_name!r}: not in {tracking_uri}; "
            f"experiments: {', '.join(names) or 'none'}"
        )
    clauses = [f"tags.{SWEEP_TAG} = '{quoted(sweep_id)}'"] if sweep_id else []
    clauses += [filter_string] if filter_string.strip() else []
    try:
        mlflow.set_tracking_uri(tracking_uri)
        runs = mlflow.search_runs(
            experiment_names=[experiment_name],
            filter_string=" and ".join(clauses),
            max_results=50000,
        )
    except MlflowException as exc:
        raise TrackingError(f"--filter {filter_string!r}: {exc.message.splitlines()[0]}") from None
    if f"tags.{PARENT_TAG}" in runs.columns:
        runs = runs.loc[runs[f"tags.{PARENT_TAG}"].ne("parent")]
    if runs.empty:
        what = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment_name!r}"
        raise TrackingError(
            f"no runs in {what}" + (f" matching {filter_string!r}" if filter_string else "")
        )
    return runs.reset_index(drop=True)


def require_run(tracking_uri: str, run_id: str) -> None:
    get_run(tracking_uri, run_id, f"--run-id {run_id}")
