"""Everything MLflow: store set-up, one run per job, sweep parents, and what a run logs.

MLflow is imported inside the functions that use it so ``--help`` and ``--cfg job`` stay instant.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback

from genre_exp.errors import ConfigError, DataError, TrackingError, first_line

log = logging.getLogger(__name__)

PARENT_ENV = "GENRE_EXP_PARENT_RUN_ID"
SWEEP_TAG = "sweep_id"
SELECTION_METRIC = "final_val_macro_f1"


def _sqlite_file(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def connect(tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    Runs before any data is read or model trained, so an unusable store costs nothing. For a
    new SQLite store the artifacts go beside the database, not into the working folder.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    db = _sqlite_file(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        _probe_server(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = artifact_location or (db.parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                return mlflow.create_experiment(
                    experiment_name, artifact_location=artifact_location
                )
            except MlflowException:
                # Another job of a parallel sweep created it first.
                experiment = mlflow.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"mlflow.experiment_name={experiment_name!r} is deleted in {tracking_uri}; "
                "restore it or choose another name"
            )
        return experiment.experiment_id
    except TrackingError:
        raise
    except Exception as exc:  # any store failure: bad URI, server down, unreadable database
        raise TrackingError(
            f"mlflow.tracking_uri={tracking_uri}: store unusable ({first_line(exc)})"
        ) from None


def _probe_server(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail in seconds on a server that is down: MLflow's own client retries for minutes."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers; MLflow's own calls will tell whether it is a tracking server
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"mlflow.tracking_uri={tracking_uri}: tracking server unreachable ({reason})"
        ) from None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def git_commit(folder: str | Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "src", "conf"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


# The id of the last run this process started: a sweep job that fails before starting one
# still gets a FAILED run in its sweep's group (record_failed_job).
last_started_run: str | None = None


def record_failed_job(
    tracking_uri: str, experiment_name: str, run_name: str, error: str, tags: Mapping[str, str]
) -> None:
    import mlflow

    parent = os.environ.get(PARENT_ENV)
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
            "error": error[:5000],
        },
    )
    client.set_terminated(failed.info.run_id, "FAILED")


@contextlib.contextmanager
def run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    log_file: Path | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Any]:
    """One MLflow run for one job, closed FINISHED, FAILED (with the error as a tag) or KILLED
    on any exit, so no run is ever left RUNNING. Inside a sweep it is the sweep parent's child.
    With ``resume_run_id`` the job continues that run instead of starting one."""
    import mlflow

    tags = dict(tags)
    parent = os.environ.get(PARENT_ENV)
    if resume_run_id:
        active = mlflow.start_run(run_id=resume_run_id, tags=tags)
    else:
        if parent:
            tags |= {"mlflow.parentRunId": parent, SWEEP_TAG: parent}
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    global last_started_run
    last_started_run = active.info.run_id
    status = "FINISHED"
    try:
        yield active
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException as exc:
        status = "FAILED"
        mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        if log_file is not None and log_file.is_file():
            with contextlib.suppress(Exception):
                # A resumed run keeps the killed job's log beside the resuming job's.
                mlflow.log_artifact(str(log_file), "hydra/resumed" if resume_run_id else "hydra")
        mlflow.end_run(status)


def epoch_logger(resumed: bool = False):
    """Keras callback logging every epoch's logs (loss, accuracy, val_*, val_macro_f1), at the
    epoch's number as step."""
    from mlflow.keras import MlflowCallback

    class EpochLogger(MlflowCallback):
        # MLflow's callback also logs each validation pass as 'validation_val_*' without a
        # step; the per-epoch 'val_*' series already holds those numbers.
        def on_test_end(self, logs=None):
            return None

        def on_train_begin(self, logs=None):
            # The killed run logged the optimizer's params; MLflow refuses changed values (a
            # learning rate cut on a plateau would be one).
            if not resumed:
                super().on_train_begin(logs)

    return EpochLogger()


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: flattened, None as 'null', values capped."""
    return {k: ("null" if v is None else str(v))[:6000] for k, v in flatten(config).items()}


@dataclass
class ResumeTarget:
    run_id: str
    # The killed job's Hydra folder, which holds its checkpoint.
    output_dir: Path


RESUMABLE_PREFIXES = ("data.", "model.")


def resume_target(
    tracking_uri: str, run_id: str, config: Mapping[str, Any], digests: Mapping[str, str]
) -> ResumeTarget:
    """The run ``training.resume`` names, checked: it exists, has not finished, and was trained
    on the same data files with the same data and model settings as ``config``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    where = f"training.resume={run_id}"
    try:
        found = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise TrackingError(f"{where}: no such run in {tracking_uri}") from None
    if found.info.status == "FINISHED":
        raise ConfigError(f"{where}: the run is already FINISHED; there is nothing to resume")
    tags = dict(found.data.tags)
    if not tags.get("hydra_output_dir"):
        raise ConfigError(f"{where}: the run has no hydra_output_dir tag, so no checkpoint")
    params = dict(found.data.params)
    for key, value in config_params(config).items():
        if key.startswith(RESUMABLE_PREFIXES) and key in params and params[key] != value:
            raise ConfigError(
                f"{where}: {key}={value} but the run was trained with {key}={params[key]}; "
                "resume with the run's data and model settings"
            )
    for split, digest in digests.items():
        recorded = tags.get(f"data.{split}_sha256")
        if recorded and recorded != digest:
            raise DataError(
                f"{where}: the {split} file changed since the run started (sha256 {digest[:12]}, "
                f"the run recorded {recorded[:12]})"
            )
    return ResumeTarget(run_id=run_id, output_dir=Path(tags["hydra_output_dir"]))


def metric_history(run_id: str, keys: list[str]) -> dict[str, list[float]]:
    """Each metric's value per step of the active store's run (the last value logged at a step
    wins), in step order: a resumed run's whole learning curve."""
    import mlflow

    mlflow.flush_async_logging()
    client = mlflow.MlflowClient()
    history: dict[str, list[float]] = {}
    for key in keys:
        by_step = {}
        for point in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            by_step[point.step] = point.value
        if by_step:
            history[key] = [by_step[s] for s in sorted(by_step)]
    return history


def log_config(config: Mapping[str, Any], overrides: list[str], output_dir: str | None) -> None:
    import mlflow

    mlflow.log_params(config_params(config))
    mlflow.set_tags(
        {
            "hydra_overrides": " ".join(overrides) or "(none)",
            "hydra_output_dir": output_dir or "",
        }
    )
    mlflow.log_dict(dict(config), "config/config.yaml")
    if output_dir and (Path(output_dir) / ".hydra").is_dir():
        mlflow.log_artifacts(str(Path(output_dir) / ".hydra"), "hydra")


def log_data(dataset, digests: Mapping[str, str], dataset_name: str) -> None:
    """Data inputs (with MLflow's digests), file digests, the distribution and drop counts."""
    import mlflow

    sources = dataset.sources
    for frame, context, source in (
        (dataset.train, "training", sources["train"]),
        (dataset.val, "validation", sources["train"]),
        (dataset.test, "testing", sources["test"]),
    ):
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and warns that a path is ambiguous
            # between the two; both are the same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            dataset_input = mlflow.data.from_pandas(
                frame[["lyrics", "genre"]],
                source=str(source),
                name=f"{dataset_name}-{context}",
                targets="genre",
            )
        mlflow.log_input(dataset_input, context=context)
    mlflow.set_tags({f"data.{split}_sha256": digest for split, digest in digests.items()})
    mlflow.set_tags({f"data.{split}_path": str(path) for split, path in sources.items()})
    counts = {
        "data_train_rows": len(dataset.train),
        "data_val_rows": len(dataset.val),
        "data_test_rows": len(dataset.test),
    }
    counts |= {f"data_dropped_{k}": v for k, v in dataset.dropped.items()}
    mlflow.log_metrics({k: float(v) for k, v in counts.items()})
    mlflow.log_dict({"rows": counts, "genres": dataset.distribution.to_dict()}, "data/summary.json")
    mlflow.log_table(dataset.distribution.reset_index(), "data/genre_distribution.json")


def log_figure(figure, path: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, path)
    plt.close(figure)


def log_evaluation(evaluation, split: str, genres: list[str]) -> None:
    import mlflow

    from genre_exp.evaluate import metric_safe

    mlflow.log_metrics(evaluation.metrics)
    mlflow.log_text(evaluation.confusion.to_csv(), f"evaluation/{split}_confusion_matrix.csv")
    mlflow.log_text(evaluation.report, f"evaluation/{split}_classification_report.txt")
    per_genre = pd.DataFrame(
        [
            {
                "genre": g,
                **{
                    m: evaluation.metrics[f"{split}_{m}_{metric_safe(g)}"]
                    for m in ("precision", "recall", "f1")
                },
            }
            for g in genres
        ]
    )
    mlflow.log_table(per_genre, f"evaluation/{split}_per_genre.json")


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(dict(metrics))


def log_model(export_model, genres: list[str], example_texts: list[str]) -> str:
    """Log the raw-text model as pyfunc (Keras inside); returns its model URI."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    import genre_exp
    from genre_exp.serving import TEXT_COLUMN

    example = pd.DataFrame({TEXT_COLUMN: [t[:500] for t in example_texts]})
    output = pd.DataFrame(
        export_model.predict(tf.constant(example[TEXT_COLUMN].tolist()), verbose=0), columns=genres
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        export_model.save(path)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(genre_exp.__file__).parent / "model_code.py"),
            artifacts={"keras_model": str(path)},
            code_paths=[str(Path(genre_exp.__file__).parent)],
            model_config={"genres": list(genres)},
            signature=infer_signature(example, output),
            input_example=example,
            # Listed, not inferred: inference loads the model in a subprocess (slow) and would
            # miss that tensorflow-cpu is the TensorFlow build in use.
            pip_requirements=[
                f"tensorflow-cpu=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"mlflow=={mlflow.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    return info.model_uri


MODEL_URI_FORMS = "runs:/<run id>/model, models:/<name>/<version> or models:/<name>@<alias>"


def _require_store(tracking_uri: str, what: str) -> None:
    db = _sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"{what}: no MLflow store at {tracking_uri}")


def load_model(tracking_uri: str, model_uri: str):
    """The logged pyfunc model behind ``model_uri``; an unknown run, model, version or alias
    is one line naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith(("runs:/", "models:/")):
        raise TrackingError(f"model {model_uri!r}: expected {MODEL_URI_FORMS}")
    _require_store(tracking_uri, f"model {model_uri}")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise TrackingError(
            f"model {model_uri}: cannot be loaded from {tracking_uri} ({first_line(exc)})"
        ) from None


CHAMPION = "champion"


def register_model(model_uri: str, name: str) -> str:
    """A new version of registered model ``name`` for a logged model; returns the version."""
    import mlflow

    return str(mlflow.register_model(model_uri, name).version)


@dataclass
class Promotion:
    name: str
    version: str
    run_id: str
    run_name: str
    metric: str
    value: float
    registered_now: bool


def promote(
    tracking_uri: str,
    experiment_name: str,
    metric: str,
    model_name: str | None = None,
    sweep_id: str | None = None,
) -> Promotion:
    """Point the ``champion`` alias of ``model_name`` (default: the experiment's name) at the
    model of the best finished run of an experiment, or of one sweep, by ``metric`` (lowest for
    a loss, else highest), registering that model first if it is not registered yet."""
    import mlflow

    where = f"--experiment {experiment_name}" + (f" --sweep {sweep_id}" if sweep_id else "")
    _require_store(tracking_uri, where)
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"{where}: no such experiment in {tracking_uri}")
    query = "attributes.status = 'FINISHED'"
    if sweep_id:
        query += f" and tags.{SWEEP_TAG} = '{_quoted(sweep_id)}'"
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], query, max_results=50000)
        # A sweep's parent only summarises its children.
        if r.data.tags.get("sweep") != "parent" and metric in r.data.metrics
    ]
    if not runs:
        raise TrackingError(f"{where}: no finished run has the metric {metric!r}")
    pick = min if metric.endswith("loss") else max
    best = pick(runs, key=lambda r: r.data.metrics[metric])
    run_id = best.info.run_id
    name = model_name or experiment_name
    versions = client.search_model_versions(
        f"name = '{_quoted(name)}' and run_id = '{run_id}'", max_results=1000
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
    )


def _quoted(value: str) -> str:
    """A value inside a single-quoted MLflow search filter."""
    return value.replace("'", "\\'")


def search_runs(
    tracking_uri: str, experiment_name: str, filter_string: str = "", sweep_id: str | None = None
) -> pd.DataFrame:
    """The job runs of an experiment (sweep parents left out), as MLflow's search gives them."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _require_store(tracking_uri, f"--experiment {experiment_name}")
    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(experiment_name) is None:
        names = [e.name for e in client.search_experiments()]
        raise TrackingError(
            f"--experiment {experiment_name!r}: not in {tracking_uri}; "
            f"experiments: {', '.join(names) or 'none'}"
        )
    clauses = [f"tags.{SWEEP_TAG} = '{sweep_id}'"] if sweep_id else []
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
    if "tags.sweep" in runs.columns:
        runs = runs.loc[runs["tags.sweep"].ne("parent")]
    if runs.empty:
        what = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment_name!r}"
        raise TrackingError(
            f"no runs in {what}" + (f" matching {filter_string!r}" if filter_string else "")
        )
    return runs.reset_index(drop=True)


def require_run(tracking_uri: str, run_id: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    _require_store(tracking_uri, f"--run-id {run_id}")
    try:
        mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise TrackingError(f"--run-id {run_id}: no such run in {tracking_uri}") from None


def log_files_to_run(tracking_uri: str, run_id: str, files: list[Path], folder: str) -> None:
    """Add files to an existing run (e.g. a data report to the run that trained on the data)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), folder)


class SweepCallback(Callback):
    """Hydra callback giving every ``-m`` sweep one MLflow parent run.

    Started in the launching process before any job, it also creates the store's tables and
    the experiment once: parallel jobs racing to create a new SQLite store lose runs. Jobs find
    the parent through an environment variable (inherited by launcher workers) and tag
    themselves with it; at the end the parent records how many jobs ran and failed, and the
    best child by validation macro-F1 (the number sweeps optimise; the test split is not used
    for selection).
    """

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.tracking_uri: str | None = None

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        import mlflow
        from hydra.core.hydra_config import HydraConfig

        cfg = config
        self.tracking_uri = cfg.mlflow.tracking_uri
        experiment_id = connect(
            cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.artifact_location
        )
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        client = mlflow.MlflowClient(self.tracking_uri)
        sweep_dir = str(cfg.hydra.sweep.dir)
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep/{Path(sweep_dir).parent.name}/{Path(sweep_dir).name}",
            tags={
                "sweep": "parent",
                "hydra_overrides": " ".join(overrides) or "(none)",
                "hydra_sweep_dir": sweep_dir,
            },
        )
        self.parent_id = parent.info.run_id
        client.set_tag(self.parent_id, SWEEP_TAG, self.parent_id)
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._close, "KILLED")
        log.info("MLflow sweep parent run %s", self.parent_id)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        # Hydra calls this from a `finally`: an exception in flight means the sweep stopped.
        stopped = sys.exc_info()[1]
        if isinstance(stopped, KeyboardInterrupt):
            self._close("KILLED")
        else:
            self._close("FAILED" if stopped is not None else "FINISHED")

    def _close(self, status: str) -> None:
        import mlflow

        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        client = mlflow.MlflowClient(self.tracking_uri)
        experiment_id = client.get_run(parent_id).info.experiment_id
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=10000,
        )
        statuses = [c.info.status for c in children]
        failed = statuses.count("FAILED")
        client.log_metric(parent_id, "sweep_jobs", len(children))
        client.log_metric(parent_id, "sweep_failed", failed)
        if failed:
            log.warning(
                "sweep: %d of %d jobs failed (MLflow parent run %s)",
                failed,
                len(children),
                parent_id,
            )
        scored = [
            c
            for c in children
            if c.info.status == "FINISHED" and SELECTION_METRIC in c.data.metrics
        ]
        if scored:
            best = max(scored, key=lambda c: c.data.metrics[SELECTION_METRIC])
            client.set_tag(parent_id, "best_run_id", best.info.run_id)
            client.set_tag(parent_id, "best_run_name", best.info.run_name)
            client.log_metric(
                parent_id, f"best_{SELECTION_METRIC}", best.data.metrics[SELECTION_METRIC]
            )
            if "test_macro_f1" in best.data.metrics:
                client.log_metric(
                    parent_id, "best_test_macro_f1", best.data.metrics["test_macro_f1"]
                )
        client.set_terminated(parent_id, status)
