"""The subcommands beside the training app (``genre-exp data|predict|promote|compare|runs``),
each an argparse module with ``main(argv)``. They are where MLflow, figures and data meet."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from genre_exp.errors import GenreExpError


def add_tracking_uri(parser: argparse.ArgumentParser, what: str = "MLflow store") -> None:
    parser.add_argument(
        "--tracking-uri",
        help=f"{what} (default: $MLFLOW_TRACKING_URI, else the project's mlruns/mlflow.db)",
    )


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """A user's error (bad input, unknown run, unusable store) as one line on stderr and exit
    status 1, never a traceback."""
    try:
        yield
    except GenreExpError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)


def plural(count: int, noun: str) -> str:
    """``1 run``, ``2 runs``: the count and its noun, the noun's last word pluralised."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
