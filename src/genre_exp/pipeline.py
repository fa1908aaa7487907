"""The training task as steps. ``train`` reads top-down as the pipeline: locate the data,
decide where to start, load, open the run, fit (vectorise, build and train, each family its way:
``fitting``), evaluate, log. Each step is a function; MLflow stays behind
``genre_exp.tracking``."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from genre_exp import checkpoint, fitting, resume
from genre_exp.models import family_of
from genre_exp.selection import EPOCH_METRIC, SELECTION_METRIC
from genre_exp.tracking import record, runs, store

log = logging.getLogger("genre_exp")


@dataclass(frozen=True)
class Job:
    """What Hydra says about the running job."""

    output_dir: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    # The job's number in a sweep; None for a single run.
    number: int | None = None
    # Set when the user asked the job to stop (Ctrl-C, SIGTERM).
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def log_file(self) -> Path:
        return self.output_dir / f"{self.name}.log"


def train(cfg: Any, job: Job) -> float:
    """One experiment, end to end; returns validation macro-F1 of the final model (what
    sweepers optimise)."""
    family_of(cfg.model)  # a model YAML that names no family stops here, before any work
    store.check_reachable(cfg.mlflow.tracking_uri)
    files = locate_data(cfg)
    config = resolved(cfg)
    start = resume.start(cfg, config, files.digests, job.output_dir)
    dataset = load_data(cfg, files)
    experiment_id = open_experiment(cfg.mlflow)
    with runs.job_run(
        experiment_id, run_name(cfg, job), run_tags(cfg, job, start), job.log_file, start.run_id
    ) as run_id:
        describe_run(run_id, cfg, start)
        if not start.resumed:
            log_inputs(config, job, dataset, files)
        val_weights = validation_weights(cfg.data, dataset)
        trained = fitting.fit(cfg, start, dataset, val_weights, job.stop)
        results = evaluate(trained, dataset, val_weights)
        log_results(results, trained, start, run_id)
        if cfg.mlflow.log_model:
            log_model(cfg.mlflow, trained, dataset, run_id)
    checkpoint.release(start.checkpoint_dir)
    return results.selection


def resolved(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def locate_data(cfg: Any):
    """The train and test files (explicit paths, ``$GENRE_EXP_DATA`` or ``data/processed``),
    checked to exist, with their digests."""
    from genre_exp.data.files import default_folders, locate

    files = locate(cfg.data.train_path, cfg.data.test_path, default_folders(cfg.paths.data_dir))
    log.info("data from %s: %s, %s", files.origin, files.train, files.test)
    return files


def load_data(cfg: Any, files):
    """Both splits read, cleaned and checked; training rows filtered, balanced and split. Read
    from the cache when a job before had the same files and data settings (``data.cache``)."""
    from genre_exp.cache import Cache, data_key

    data = cfg.data
    if not data.cache:
        dataset = _read_and_clean(data, files)
        log.info("data read and cleaned (data.cache=false)")
    else:
        cache = Cache(cfg.paths.cache_dir)
        key = data_key(resolved(data), files)
        dataset, cached = cache.dataset(key, lambda: _read_and_clean(data, files))
        where = cache.path("data", key)
        if cached:
            log.info("data from the cache: %s", where)
        else:
            log.info("data read and cleaned, cached as %s", where)
    log.info(
        "data: %d train, %d validation, %d test rows; dropped %s",
        len(dataset.train),
        len(dataset.val),
        len(dataset.test),
        {k: v for k, v in dataset.dropped.items() if v} or "none",
    )
    return dataset


def _read_and_clean(data: Any, files):
    from genre_exp.data.layout import Columns
    from genre_exp.data.load import load_dataset

    return load_dataset(
        train_path=files.train,
        test_path=files.test,
        genres=list(data.genres),
        columns=Columns(**data.columns),
        languages=data.languages,
        balance_train=str(data.balance),
        val_by_artist=str(data.val_split) == "by_artist",
        unknown_genres=str(data.unknown_genres),
        val_fraction=data.val_fraction,
        max_train_rows=data.max_train_rows,
        seed=data.seed,
    )


def open_experiment(mlflow_cfg: Any) -> str:
    """The experiment's id, the store created if new; runs of the experiment whose process
    died without closing them are marked FAILED first."""
    from genre_exp.tracking import liveness

    experiment_id = store.connect(
        mlflow_cfg.tracking_uri, mlflow_cfg.experiment_name, mlflow_cfg.artifact_location
    )
    for reaped in liveness.reap(mlflow_cfg.tracking_uri, [experiment_id]):
        log.warning("run %s (%s) marked FAILED: %s", reaped.run_id, reaped.run_name, reaped.reason)
    return experiment_id


def run_name(cfg: Any, job: Job) -> str:
    number = "" if job.number is None else f"/{job.number}"
    return cfg.mlflow.run_name or (
        f"{cfg.model.name}/{cfg.data.name}/{datetime.now():%Y-%m-%d_%H-%M-%S}{number}"
    )


def run_tags(cfg: Any, job: Job, start: resume.Start) -> dict[str, str]:
    if start.resumed:
        # The killed run's params, data inputs and data figures stay as they are.
        return {
            "resumed_from_epoch": str(start.first_epoch),
            "resume_overrides": " ".join(job.overrides),
        }
    from genre_exp.models import family_of

    return {
        "git_commit": record.git_commit(cfg.paths.root_dir),
        "model": cfg.model.name,
        "model_family": family_of(cfg.model).name,
        "data": cfg.data.name,
        **{str(k): str(v) for k, v in cfg.tags.items()},
    }


def describe_run(run_id: str, cfg: Any, start: resume.Start) -> None:
    if start.resumed:
        log.info(
            "MLflow run %s resumed after epoch %d from %s",
            run_id,
            start.first_epoch,
            start.checkpoint_dir,
        )
    else:
        log.info("MLflow run %s in %s", run_id, cfg.mlflow.tracking_uri)


def log_inputs(config: dict, job: Job, dataset, files) -> None:
    """What the run was asked to do and on what: config, overrides, data and its figure."""
    from genre_exp import plots

    record.log_config(config, job.overrides, str(job.output_dir))
    record.log_data(dataset, files.digests, config["data"]["name"])
    record.log_figure(
        plots.distribution_figure(dataset.distribution), "plots/genre_distribution.png"
    )


@dataclass
class Results:
    validation: Any
    test: Any

    @property
    def selection(self) -> float:
        return self.validation.metrics[EPOCH_METRIC]


def validation_weights(data: Any, dataset):
    """Per-row weights of the validation scores: None (rows as they come), or every genre
    weighing the same (``data.val_weights=balanced``)."""
    if str(data.val_weights) != "balanced":
        return None
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", dataset.codes("val"))


def evaluate(trained, dataset, val_weights) -> Results:
    """The final model on the validation split (what sweeps choose on) and the test split."""
    from genre_exp.evaluate import evaluate as score

    return Results(
        validation=score(
            dataset.codes("val"),
            trained.predict("val"),
            dataset.genres,
            prefix="val",
            sample_weight=val_weights,
        ),
        test=score(dataset.codes("test"), trained.predict("test"), dataset.genres, prefix="test"),
    )


def log_results(results: Results, trained, start: resume.Start, run_id: str) -> None:
    """Final metrics, the test evaluation, the confusion matrix and the learning curves."""
    from genre_exp import plots

    history = trained.history
    # A resumed run's curves start with the killed job's epochs, which only MLflow holds.
    curves = record.metric_history(run_id, list(history)) if start.resumed else history
    record.log_metrics(
        {
            "final_val_accuracy": results.validation.metrics["val_accuracy"],
            SELECTION_METRIC: results.selection,
            "epochs_trained": start.first_epoch + len(history.get(EPOCH_METRIC, [])),
        }
    )
    record.log_evaluation(results.test, "test")
    record.log_figure(plots.confusion_figure(results.test.confusion), "plots/confusion_matrix.png")
    record.log_figure(plots.learning_curves_figure(curves), "plots/learning_curves.png")
    log.info(
        "test accuracy %.4f, macro-F1 %.4f (validation macro-F1 %.4f)\n%s",
        results.test.metrics["test_accuracy"],
        results.test.metrics["test_macro_f1"],
        results.selection,
        results.test.report,
    )


def log_model(mlflow_cfg: Any, trained, dataset, run_id: str) -> None:
    """The raw-lyrics model, registered if ``mlflow.registered_model_name`` says so."""
    uri = record.log_model(trained.text_model(), dataset.genres, dataset.texts("test")[:2])
    # The run's path is the form the README and `genre-exp predict --help` teach; MLflow's
    # own id of the logged model follows it.
    log.info("model logged: runs:/%s/model (%s)", run_id, uri)
    if mlflow_cfg.registered_model_name:
        version = record.register_model(uri, mlflow_cfg.registered_model_name)
        log.info("model registered: models:/%s/%s", mlflow_cfg.registered_model_name, version)
