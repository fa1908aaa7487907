"""The logged model: raw lyrics in, one probability column per genre out.

Keras' own MLflow flavour cannot carry a string-input model (its signature must be a tensor
spec), so the Keras model travels as an artifact inside this pyfunc wrapper.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from genre_exp.data.layout import TEXT_COLUMN
from genre_exp.data.load import NotText, text_cells

BATCH_SIZE = 256


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
        import keras

        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.genres = list(context.model_config["genres"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import tensorflow as tf

        texts = lyrics_from(model_input)
        if not texts:
            return pd.DataFrame(columns=self.genres, dtype="float32")
        probabilities = self.model.predict(
            tf.constant(texts, dtype=tf.string), batch_size=BATCH_SIZE, verbose=0
        )
        return pd.DataFrame(probabilities, columns=self.genres)
