"""``genre-exp promote --experiment NAME [--sweep ID] [--metric M] [--name MODEL]``: the best
run's model becomes ``models:/<name>@champion``."""

from __future__ import annotations

import argparse
import sys

from genre_exp.commands import add_tracking_uri, one_line_errors
from genre_exp.config import tracking_uri
from genre_exp.selection import SELECTION_METRIC


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-exp promote",
        description="Set the 'champion' alias on the model of the best finished run of an "
        "experiment or sweep, registering it first if needed.",
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--sweep", help="only the runs of this sweep (its parent run id)")
    p.add_argument(
        "--metric",
        # Choosing on the test split would make its score an optimistic estimate.
        default=SELECTION_METRIC,
        help="highest wins; lowest for a metric ending in 'loss' (default: %(default)s, "
        "validation macro-F1)",
    )
    p.add_argument("--name", help="registered model name (default: the experiment name)")
    add_tracking_uri(p)
    return p


def main(argv: list[str] | None = None) -> None:
    from genre_exp.tracking.queries import CHAMPION, promote

    args = parser().parse_args(argv)
    with one_line_errors("genre-exp promote"):
        promoted = promote(
            tracking_uri(args.tracking_uri), args.experiment, args.metric, args.name, args.sweep
        )
    if promoted.validated_differently:
        differ = "; ".join(
            f"{param}: {', '.join(values)}"
            for param, values in promoted.validated_differently.items()
        )
        print(
            f"genre-exp promote: note: the runs chosen from were validated on different rows "
            f"or weights ({differ}), so their {promoted.metric} do not compare; narrow them "
            "with --sweep, or see genre-exp compare --group-by",
            file=sys.stderr,
        )
    how = "registered and promoted" if promoted.registered_now else "promoted"
    print(
        f"models:/{promoted.name}@{CHAMPION} -> version {promoted.version} ({how}): "
        f"run {promoted.run_id} ({promoted.run_name}), {promoted.metric}={promoted.value:.4f}"
    )
