"""MLflow "models from code" entry: the logged model is built by running this file, not by
unpickling an object."""

from mlflow.models import set_model

from genre_exp.serving import GenreClassifier

set_model(GenreClassifier())
