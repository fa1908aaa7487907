"""``genre-exp compare``: one table for many runs.

Runs of an experiment (optionally one sweep, or an MLflow search filter), sorted by a metric,
with the params that differ between them, test scores, per-genre F1 and duration; written as
CSV and Markdown, with a figure of per-genre F1 for the top runs.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
from pathlib import Path

import pandas as pd

from genre_exp.commands import add_tracking_uri, one_line_errors
from genre_exp.errors import GenreExpError
from genre_exp.selection import SELECTION_METRIC, lower_is_better

SCORES = ["test_accuracy", "test_macro_f1", "test_weighted_f1", SELECTION_METRIC]
# Params that differ between runs of one sweep without saying anything about the model.
NOISE_PARAMS = ("paths.", "mlflow.run_name", "optimizer_")


def differing_params(runs: pd.DataFrame) -> list[str]:
    columns = [
        c
        for c in runs.columns
        if c.startswith("params.") and not c.removeprefix("params.").startswith(NOISE_PARAMS)
    ]
    # Sorted: MLflow's search builds its param columns from a set, in no fixed order.
    return sorted(c for c in columns if runs[c].fillna("∅").nunique() > 1)


def genre_columns(runs: pd.DataFrame) -> list[str]:
    """The per-genre F1 columns in the runs' label order (``data.genres``), others after."""
    from genre_exp.evaluate import metric_safe

    present = [c for c in runs.columns if c.startswith("metrics.test_f1_")]
    order: list[str] = []
    for value in runs.get("params.data.genres", pd.Series(dtype=object)).dropna():
        with contextlib.suppress(ValueError, SyntaxError):
            order += [f"metrics.test_f1_{metric_safe(g)}" for g in ast.literal_eval(value)]
    ordered = [c for c in dict.fromkeys(order) if c in present]
    return ordered + sorted(set(present) - set(ordered))


def comparison_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run, best first by ``metric`` (lowest first for a loss); runs without it
    last."""
    if f"metrics.{metric}" not in runs.columns:
        raise GenreExpError(
            f"--metric {metric}: no run has it; metrics present: "
            + ", ".join(sorted(c[8:] for c in runs.columns if c.startswith("metrics.")))[:400]
        )
    runs = runs.sort_values(
        f"metrics.{metric}", ascending=lower_is_better(metric), na_position="last"
    )
    per_genre = genre_columns(runs)
    table = pd.DataFrame(
        {
            "run": runs["tags.mlflow.runName"].fillna(""),
            "run_id": runs["run_id"],
            "status": runs["status"],
        }
    )
    for column in differing_params(runs):
        table[column.removeprefix("params.")] = runs[column]
    for score in dict.fromkeys([metric, *SCORES]):
        if f"metrics.{score}" in runs.columns:
            table[score] = runs[f"metrics.{score}"].round(4)
    for column in per_genre:
        table[f"f1 {column.removeprefix('metrics.test_f1_')}"] = runs[column].round(3)
    duration = (runs["end_time"] - runs["start_time"]).dt.total_seconds() / 60
    table["minutes"] = duration.round(1)
    return table.reset_index(drop=True)


def per_genre_frame(table: pd.DataFrame, top: int) -> pd.DataFrame:
    """Genres as rows, the top runs as columns: what the per-genre figure draws."""
    best = table.head(top)
    columns = [c for c in table.columns if c.startswith("f1 ")]
    frame = best.set_index(best["run"] + " (" + best["run_id"].str[:8] + ")")[columns].T
    frame.index = [c.removeprefix("f1 ") for c in columns]
    return frame


def main(argv: list[str] | None = None) -> None:
    from genre_exp.config import project_root

    parser = argparse.ArgumentParser(prog="genre-exp compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("--experiment", default="genre-exp", help="(default: %(default)s)")
    parser.add_argument("--sweep", help="a sweep's id: its parent run id (tag sweep_id)")
    parser.add_argument(
        "--filter", default="", help="MLflow search filter, e.g. \"params.model.name = 'lstm'\""
    )
    parser.add_argument(
        "--metric",
        default="test_macro_f1",
        help="sort by, best first: highest, or lowest for a loss (default: %(default)s)",
    )
    parser.add_argument("--top", type=int, default=5, help="runs in the per-genre F1 figure")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for compare.csv, compare.md, "
        "per_genre_f1.png (default: outputs/compare/<experiment>[-<sweep>])",
    )
    add_tracking_uri(parser)
    args = parser.parse_args(argv)
    with one_line_errors("genre-exp compare"):
        run(args, Path(project_root()))


def run(args: argparse.Namespace, root: Path) -> None:
    from genre_exp import plots
    from genre_exp.config import tracking_uri
    from genre_exp.tracking.queries import search_runs

    uri = tracking_uri(args.tracking_uri)
    runs = search_runs(uri, args.experiment, args.filter, args.sweep)
    table = comparison_table(runs, args.metric)
    out = args.out or root / "outputs" / "compare" / (
        args.experiment + (f"-{args.sweep[:8]}" if args.sweep else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    markdown = table.drop(columns="run_id").to_markdown(index=False)
    (out / "compare.md").write_text(markdown + "\n", encoding="utf-8")
    plots.save(
        plots.per_genre_f1_figure(per_genre_frame(table, args.top)), out / "per_genre_f1.png"
    )
    print(markdown)
    print(
        f"\n{len(table)} runs of {args.experiment!r}, by {args.metric}; written: "
        f"{out / 'compare.csv'}, {out / 'compare.md'}, {out / 'per_genre_f1.png'}"
    )
