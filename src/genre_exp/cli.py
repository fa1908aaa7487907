"""The entrypoint: ``genre-exp`` / ``python -m genre_exp``, a Hydra app.

The task reads top-down as the pipeline: connect to MLflow -> load data -> vectorise -> build
-> fit -> evaluate -> log. It returns the validation macro-F1 so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genre_exp import tracking
from genre_exp.config import config_dir
from genre_exp.errors import ConfigError, GenreExpError

log = logging.getLogger("genre_exp")

# TensorFlow's C++ start-up chatter (oneDNN, CPU features, missing CUDA) is not the user's concern.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# MLflow's artifact progress bars are noise in a training log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# Subcommands beside the Hydra app, each an argparse module with its own main(argv).
COMMANDS = {
    "data": "genre_exp.data.commands",
    "predict": "genre_exp.predict",
    "promote": "genre_exp.promote",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run ends KILLED."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


def train_and_log(cfg: DictConfig) -> float:
    """One experiment, end to end; returns validation macro-F1 of the final model."""
    from genre_exp import checkpoint, evaluate, models, plots, train, vectorize
    from genre_exp import data as data_mod

    experiment_id = tracking.connect(
        cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.artifact_location
    )

    d = cfg.data
    train_path, test_path, origin = data_mod.resolve_paths(
        d.train_path, d.test_path, data_mod.default_folders(cfg.paths.data_dir)
    )
    log.info("data from %s: %s, %s", origin, train_path, test_path)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    target, saved = resume_point(cfg, config, train_path, test_path)
    dataset = data_mod.load_dataset(
        train_path=train_path,
        test_path=test_path,
        genres=list(d.genres),
        columns=data_mod.Columns(**d.columns),
        languages=d.languages,
        balance_train=d.balance,
        unknown_genres=str(d.unknown_genres),
        val_fraction=d.val_fraction,
        max_train_rows=d.max_train_rows,
        seed=d.seed,
    )
    genres = dataset.genres
    log.info(
        "data: %d train, %d validation, %d test rows; dropped %s",
        len(dataset.train),
        len(dataset.val),
        len(dataset.test),
        {k: v for k, v in dataset.dropped.items() if v} or "none",
    )

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    job = f"/{hydra_cfg.job.num}" if hydra_cfg.mode == RunMode.MULTIRUN else ""
    run_name = cfg.mlflow.run_name or (
        f"{cfg.model.name}/{d.name}/{datetime.now():%Y-%m-%d_%H-%M-%S}{job}"
    )
    tags = {
        "git_commit": tracking.git_commit(cfg.paths.root_dir),
        "model": cfg.model.name,
        "data": d.name,
        **{str(k): str(v) for k, v in cfg.tags.items()},
    }
    if saved is not None:
        # The killed run's params, data inputs and data figures stay as they are.
        tags = {
            "resumed_from_epoch": str(saved.epoch),
            "resume_overrides": " ".join(hydra_cfg.overrides.task),
        }
        checkpoint_dir = checkpoint.folder(target.output_dir)
    else:
        checkpoint_dir = checkpoint.folder(output_dir)
    with tracking.run(
        experiment_id,
        run_name,
        tags,
        log_file=output_dir / f"{hydra_cfg.job.name}.log",
        resume_run_id=target.run_id if target else None,
    ) as active:
        run_id = active.info.run_id
        if saved is None:
            log.info("MLflow run %s (%s) in %s", run_id, run_name, cfg.mlflow.tracking_uri)
            tracking.log_config(config, list(hydra_cfg.overrides.task), str(output_dir))
            tracking.log_data(
                dataset, {s: data_mod.file_digest(p) for s, p in dataset.sources.items()}, d.name
            )
            tracking.log_figure(
                plots.distribution_figure(dataset.distribution), "plots/genre_distribution.png"
            )
            vectorizer = vectorize.build_vectorizer(
                dataset.train["lyrics"].tolist(),
                d.vocab_size,
                d.sequence_length,
                str(d.standardize),
            )
            checkpoint.save_vocabulary(checkpoint_dir, vectorizer.get_vocabulary())
        else:
            log.info(
                "MLflow run %s resumed after epoch %d from %s", run_id, saved.epoch, checkpoint_dir
            )
            vectorizer = vectorize.vectorizer_from_vocabulary(
                saved.vocabulary, d.vocab_size, d.sequence_length, str(d.standardize)
            )
        x_train, x_val, x_test = (
            vectorize.vectorize(vectorizer, split["lyrics"].tolist())
            for split in (dataset.train, dataset.val, dataset.test)
        )
        codes = {g: i for i, g in enumerate(genres)}
        y_train, y_val, y_test = (
            split["genre"].map(codes).to_numpy()
            for split in (dataset.train, dataset.val, dataset.test)
        )

        m = cfg.model
        train.seed_everything(cfg.training.seed)
        if saved is not None:
            classifier = checkpoint.load_classifier(saved)
        else:
            classifier = models.build_classifier(
                vocab_size=vectorizer.vocabulary_size(),
                sequence_length=d.sequence_length,
                n_classes=len(genres),
                embedding_dim=m.embedding_dim,
                lstm_units=m.lstm_units,
                bidirectional=m.bidirectional,
                dropout=m.dropout,
                batch_norm=m.batch_norm,
                dense_units=m.dense_units,
                name=m.name,
            )
        history = train.fit(
            classifier,
            x_train,
            y_train,
            x_val,
            y_val,
            len(genres),
            cfg.training,
            # After the logger: a checkpoint on disk means its epoch's metrics were logged.
            extra_callbacks=[
                tracking.epoch_logger(resumed=saved is not None),
                checkpoint.callback(checkpoint_dir),
            ],
            initial_epoch=saved.epoch if saved else 0,
        )
        epochs = (saved.epoch if saved else 0) + len(history.history.get("loss", []))
        curves = (
            tracking.metric_history(run_id, list(history.history)) if saved else history.history
        )

        predict_batch = max(cfg.training.batch_size, 256)
        validation = evaluate.evaluate(
            y_val,
            classifier.predict(x_val, batch_size=predict_batch, verbose=0),
            genres,
            prefix="val",
        )
        test = evaluate.evaluate(
            y_test,
            classifier.predict(x_test, batch_size=predict_batch, verbose=0),
            genres,
            prefix="test",
        )
        tracking.log_metrics(
            {
                "final_val_accuracy": validation.metrics["val_accuracy"],
                "final_val_macro_f1": validation.metrics["val_macro_f1"],
                "epochs_trained": epochs,
            }
        )
        tracking.log_evaluation(test, "test", genres)
        tracking.log_figure(plots.confusion_figure(test.confusion), "plots/confusion_matrix.png")
        tracking.log_figure(plots.learning_curves_figure(curves), "plots/learning_curves.png")
        log.info(
            "test accuracy %.4f, macro-F1 %.4f (validation macro-F1 %.4f)\n%s",
            test.metrics["test_accuracy"],
            test.metrics["test_macro_f1"],
            validation.metrics["val_macro_f1"],
            test.report,
        )
        if cfg.mlflow.log_model:
            uri = tracking.log_model(
                models.export_model(vectorizer, classifier),
                genres,
                dataset.test["lyrics"].head(2).tolist(),
            )
            log.info("model logged: %s", uri)
            if cfg.mlflow.registered_model_name:
                version = tracking.register_model(uri, cfg.mlflow.registered_model_name)
                log.info(
                    "model registered: models:/%s/%s", cfg.mlflow.registered_model_name, version
                )
    return validation.metrics["val_macro_f1"]


def resume_point(cfg: DictConfig, config: dict, train_path: Path, test_path: Path):
    """(the run to continue, its checkpoint) for ``training.resume``, else (None, None);
    checked before any data is loaded."""
    from genre_exp import checkpoint, tracking
    from genre_exp.data import file_digest

    run_id = cfg.training.resume
    if not run_id:
        return None, None
    digests = {"train": file_digest(train_path), "test": file_digest(test_path)}
    target = tracking.resume_target(cfg.mlflow.tracking_uri, run_id, config, digests)
    saved = checkpoint.load(checkpoint.folder(target.output_dir))
    if saved is None:
        raise ConfigError(
            f"training.resume={run_id}: no checkpoint in {checkpoint.folder(target.output_dir)} "
            "(the run stopped before its first epoch ended, or the folder is gone)"
        )
    if saved.epoch >= cfg.training.epochs:
        raise ConfigError(
            f"training.resume={run_id}: the checkpoint is after epoch {saved.epoch}, and "
            f"training.epochs={cfg.training.epochs}; raise training.epochs to train on"
        )
    return target, saved


@hydra.main(
    config_path=str(config_dir()),
    config_name="config",
    execution_whitelist=["genre_exp.tracking.SweepCallback"],
)
def task(cfg: DictConfig) -> float:
    """Hydra's task: runs the pipeline, turning a user error into one line and SIGTERM into
    the same clean stop as Ctrl-C. In a sweep, a failing job is recorded (log, MLflow run
    FAILED) and returns NaN, so the sweep goes on with the others (Optuna marks the trial
    failed)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    tracking.last_started_run = None
    try:
        return train_and_log(cfg)
    except GenreExpError as exc:
        log.error("%s", exc)
        if not sweeping:
            raise SystemExit(1) from None
        return _failed_in_sweep(cfg, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        if not sweeping:
            raise
        log.exception("job %s failed", HydraConfig.get().job.num)
        return _failed_in_sweep(cfg, f"{type(exc).__name__}: {exc}")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _failed_in_sweep(cfg: DictConfig, error: str) -> float:
    """NaN for the sweeper (Optuna marks the trial failed); a FAILED run in the sweep's group
    if the job failed before starting its own."""
    if tracking.last_started_run is None:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            tracking.record_failed_job(
                cfg.mlflow.tracking_uri,
                cfg.mlflow.experiment_name,
                f"{cfg.model.name}/{cfg.data.name}/failed/{HydraConfig.get().job.num}",
                error,
                {"hydra_overrides": " ".join(HydraConfig.get().overrides.task) or "(none)"},
            )
    return math.nan


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        import importlib

        importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["compare"]:
        from genre_exp.compare import main as compare_main

        compare_main(sys.argv[2:])
        return
    try:
        task()
    except KeyboardInterrupt as exc:
        print(
            f"genre-exp: interrupted ({str(exc) or 'Ctrl-C'}); the MLflow run is marked KILLED",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
