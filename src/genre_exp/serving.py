"""The logged model: raw lyrics in, one probability column per genre out, whatever the family.

Keras' own MLflow flavour cannot carry a string-input model (its signature must be a tensor
spec), and scikit-learn's would answer labels rather than each genre's probability, so the
trained text model (a Keras model with its vectoriser inside, or a scikit-learn pipeline) travels
as an artifact inside this one pyfunc wrapper: ``predict``, serving and benchmarks see one shape.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from genre_exp.data.layout import TEXT_COLUMN
from genre_exp.data.load import NotText, text_cells

BATCH_SIZE = 256
KERAS_ARTIFACT = "keras_model"
SKLEARN_ARTIFACT = "sklearn_model"


def save_text_model(model, folder: Path) -> dict[str, str]:
    """Write a trained text model into ``folder``; returns the pyfunc artifacts naming it."""
    if hasattr(model, "predict_proba"):
        import joblib

        path = folder / "model.joblib"
        joblib.dump(model, path)
        return {SKLEARN_ARTIFACT: str(path)}
    path = folder / "model.keras"
    model.save(path)
    return {KERAS_ARTIFACT: str(path)}


def load_text_model(artifacts: dict[str, str]):
    if SKLEARN_ARTIFACT in artifacts:
        import joblib

        return joblib.load(artifacts[SKLEARN_ARTIFACT])
    import keras

    return keras.models.load_model(artifacts[KERAS_ARTIFACT], compile=False)


def probabilities(model, texts: list[str]):
    """Each genre's probability for each text, in the model's label order."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(texts)
    import tensorflow as tf

    return model.predict(tf.constant(texts, dtype=tf.string), batch_size=BATCH_SIZE, verbose=0)


def lyrics_from(model_input) -> list[str]:
    """The lyrics column as a list of strings; missing values become empty strings, and
    anything else that is not text is refused with a message a client can act on."""
    if isinstance(model_input, pd.Series):
        model_input = model_input.to_frame(TEXT_COLUMN)
    elif isinstance(model_input, (list, tuple)):
        model_input = pd.DataFrame({TEXT_COLUMN: list(model_input)})
    if not isinstance(model_input, pd.DataFrame):
        raise MlflowException(
            f"expected a table with a {TEXT_COLUMN!r} column, got {type(model_input).__name__}",
            error_code=INVALID_PARAMETER_VALUE,
        )
    if TEXT_COLUMN not in model_input.columns:
        raise MlflowException(
            f"expected a {TEXT_COLUMN!r} column, got columns {list(model_input.columns)}",
            error_code=INVALID_PARAMETER_VALUE,
        )
    try:
        return text_cells(model_input[TEXT_COLUMN].tolist())
    except NotText as exc:
        raise MlflowException(
            f"row {exc.row} of {TEXT_COLUMN!r} is {exc.type_name}, expected text",
            error_code=INVALID_PARAMETER_VALUE,
        ) from None


class GenreClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = load_text_model(context.artifacts)
        self.genres = list(context.model_config["genres"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = lyrics_from(model_input)
        if not texts:
            return pd.DataFrame(columns=self.genres, dtype="float32")
        return pd.DataFrame(probabilities(self.model, texts), columns=self.genres)
