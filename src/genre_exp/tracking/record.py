"""What a run records: its config, data, metrics, figures, per-epoch curves and the raw-lyrics
model; and reading a run's curves back."""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: flattened, None as 'null', values capped."""
    return {k: ("null" if v is None else str(v))[:6000] for k, v in flatten(config).items()}


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


def _log_input(dataset_input, context: str) -> None:
    """``mlflow.log_input``, once more when a parallel job logged the same data set at the same
    moment: MLflow's store looks the data set up, then inserts it, so on PostgreSQL the later
    insert of two breaks the table's unique key and the request fails (400, which the client
    does not retry); the second try finds the data set."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset_input, context=context)
    except MlflowException as exc:
        if "unique" not in str(exc).lower() and "duplicate" not in str(exc).lower():
            raise
        mlflow.log_input(dataset_input, context=context)


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
        _log_input(dataset_input, context)
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


def log_evaluation(evaluation, split: str) -> None:
    """Metrics, confusion matrix, sklearn's report and the per-genre table of one split."""
    import mlflow

    mlflow.log_metrics(evaluation.metrics)
    mlflow.log_text(evaluation.confusion.to_csv(), f"evaluation/{split}_confusion_matrix.csv")
    mlflow.log_text(evaluation.report, f"evaluation/{split}_classification_report.txt")
    mlflow.log_table(evaluation.per_genre(), f"evaluation/{split}_per_genre.json")


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(dict(metrics), step=step)


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


def log_model(text_model, genres: list[str], example_texts: list[str]) -> str:
    """Log a trained text model (raw lyrics in: Keras with its vectoriser, or scikit-learn) as
    genre-exp's pyfunc model; returns its model URI."""
    import keras
    import mlflow
    import pandas as pd
    import sklearn
    import tensorflow as tf
    from mlflow.models import infer_signature

    import genre_exp
    from genre_exp.data.layout import TEXT_COLUMN
    from genre_exp.serving import probabilities, save_text_model

    example = pd.DataFrame({TEXT_COLUMN: [t[:500] for t in example_texts]})
    output = pd.DataFrame(probabilities(text_model, example[TEXT_COLUMN].tolist()), columns=genres)
    with tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(genre_exp.__file__).parent / "model_code.py"),
            artifacts=save_text_model(text_model, Path(tmp)),
            code_paths=[str(Path(genre_exp.__file__).parent)],
            model_config={"genres": list(genres)},
            signature=infer_signature(example, output),
            input_example=example,
            # Listed, not inferred: inference loads the model in a subprocess (slow) and would
            # miss that tensorflow-cpu is the TensorFlow build in use.
            pip_requirements=[
                f"tensorflow-cpu=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"mlflow=={mlflow.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    return info.model_uri


def register_model(model_uri: str, name: str) -> str:
    """A new version of registered model ``name`` for a logged model; returns the version."""
    import mlflow

    return str(mlflow.register_model(model_uri, name).version)


def log_files_to_run(tracking_uri: str, run_id: str, files: list[Path], folder: str) -> None:
    """Add files to an existing run (e.g. a data report to the run that trained on the data)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), folder)
