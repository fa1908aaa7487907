"""``genre-exp predict MODEL_URI INPUT... [-o OUTPUT]`` (also ``python -m genre_exp.predict``):
the top genre and every genre's probability for lyrics given on the command line, in text files
(one song each) or in a CSV/Parquet table's lyrics column.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from genre_exp.commands import add_tracking_uri, one_line_errors, plural
from genre_exp.config import tracking_uri
from genre_exp.data.layout import TEXT_COLUMN
from genre_exp.errors import DataError

# MLflow's per-file download bars would bury the one progress bar that matters here.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUTPUTS = (".csv", ".json")
PREVIEW = 40


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-exp predict",
        description="Predict genres with a logged model. INPUT is lyrics text, a text file "
        "(one song), or a .csv/.parquet file with a lyrics column.",
    )
    p.add_argument(
        "model_uri",
        metavar="MODEL_URI",
        help="runs:/<run id>/model, models:/<name>/<version> or models:/<name>@champion",
    )
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="lyrics, a text file or a table")
    p.add_argument(
        "-o", "--output", type=Path, help="write .csv or .json instead of a table on stdout"
    )
    p.add_argument(
        "--column",
        default=TEXT_COLUMN,
        help="the lyrics column of a table input (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="songs per model call")
    add_tracking_uri(p)
    return p


def is_path(argument: str) -> bool:
    """Lyrics have spaces; a file name without spaces that has a suffix or a folder is a path,
    so a mistyped file name is reported rather than classified as lyrics."""
    if Path(argument).is_file():
        return True
    return not any(ch.isspace() for ch in argument) and (
        "/" in argument or os.sep in argument or bool(Path(argument).suffix)
    )


def read_inputs(arguments: Sequence[str], column: str = TEXT_COLUMN) -> pd.DataFrame:
    """One row per song: ``input`` (where it came from) and ``lyrics``."""
    from genre_exp.data.files import is_table, normalise_column, read_table

    parts = []
    for argument in arguments:
        path = Path(argument)
        if not is_path(argument):
            parts.append(pd.DataFrame({"input": [_preview(argument)], "lyrics": [argument]}))
        elif is_table(path):
            parts.append(_table_lyrics(read_table(path), path, normalise_column(column)))
        else:
            parts.append(pd.DataFrame({"input": [str(path)], "lyrics": [_read_text(path)]}))
    return pd.concat(parts, ignore_index=True)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 3] + "..."


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: not readable ({exc.strerror or exc})") from None


def _table_lyrics(frame: pd.DataFrame, path: Path, column: str) -> pd.DataFrame:
    if column not in frame.columns:
        raise DataError(
            f"{path}: missing column {column!r} (--column); "
            f"columns present: {', '.join(map(str, frame.columns)) or '(none)'}"
        )
    from genre_exp.data.load import NotText, text_cells

    # Normalisation can make two columns one name ('Lyrics', 'lyrics'): the first one counts.
    values = frame.loc[:, frame.columns == column].iloc[:, 0]
    try:
        texts = text_cells(values.tolist())
    except NotText as exc:
        raise DataError(f"{path}: column {column!r} {exc}") from None
    return pd.DataFrame({"input": [f"{path}:{i}" for i in range(len(texts))], "lyrics": texts})


def predict_probabilities(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """One probability column per genre, one row per text, in ``batch_size`` model calls; a
    progress bar on stderr when there is more than one call."""
    from tqdm import tqdm

    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: expected a positive number")
    starts = range(0, len(texts), batch_size)
    bar = tqdm(starts, desc="predicting", unit="batch", disable=not progress or len(starts) <= 1)
    parts = [predict(pd.DataFrame({TEXT_COLUMN: list(texts[i : i + batch_size])})) for i in bar]
    return pd.concat(parts, ignore_index=True)


def result_frame(inputs: pd.DataFrame, probabilities: pd.DataFrame) -> pd.DataFrame:
    """``input``, the top ``genre``, then each genre's probability."""
    top = probabilities.idxmax(axis=1) if len(probabilities) else pd.Series([], dtype=str)
    return pd.concat(
        [
            inputs[["input"]].reset_index(drop=True),
            top.rename("genre").reset_index(drop=True),
            probabilities.reset_index(drop=True),
        ],
        axis=1,
    )


def check_output(output: Path | None) -> None:
    if output is not None and output.suffix.lower() not in OUTPUTS:
        raise DataError(
            f"{output}: unknown output type {output.suffix or '(none)'!r}; expected .csv or .json"
        )


def write(result: pd.DataFrame, output: Path | None) -> None:
    if output is None:
        print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return
    check_output(output)
    suffix = output.suffix.lower()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            result.to_csv(output, index=False)
        else:
            result.to_json(output, orient="records", force_ascii=False, indent=1)
    except OSError as exc:
        raise DataError(f"{output}: cannot be written ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> pd.DataFrame:
    from genre_exp.tracking.queries import load_model

    check_output(args.output)  # before the slow model load
    inputs = read_inputs(args.inputs, args.column)
    model = load_model(tracking_uri(args.tracking_uri), args.model_uri)
    probabilities = predict_probabilities(model.predict, inputs["lyrics"].tolist(), args.batch_size)
    result = result_frame(inputs, probabilities)
    write(result, args.output)
    return result


def main(argv: list[str] | None = None) -> None:
    from genre_exp.console import hide_native_logs

    args = parser().parse_args(argv)
    hide_native_logs()  # loading the model starts TensorFlow, which logs past its own settings
    with one_line_errors("genre-exp predict"):
        result = run(args)
    if args.output is not None:
        print(f"{plural(len(result), 'prediction')} written to {args.output}", file=sys.stderr)
