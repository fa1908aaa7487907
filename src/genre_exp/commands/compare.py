"""``genre-exp compare``: one table for many runs.

Runs of an experiment (optionally one sweep, or an MLflow search filter), sorted by a metric,
with the params that differ between them, test scores, per-genre F1 and duration; written as
CSV and Markdown, with a figure of per-genre F1 for the top runs. With --group-by, runs that
repeat one configuration with other seeds are one row: mean and std of each score.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from genre_exp.commands import add_tracking_uri, one_line_errors
from genre_exp.errors import GenreExpError
from genre_exp.selection import SELECTION_METRIC, lower_is_better

SCORES = ["test_accuracy", "test_macro_f1", "test_weighted_f1", SELECTION_METRIC]
# Params that only choose a run's random draws (initial weights, dropout, batch order): runs
# equal but for them repeat one configuration. data.seed also redraws the subsample, the
# balancing and the validation split; whether that is noise or another data set is the
# user's call (--seed-params).
SEED_PARAMS = ("training.seed",)
WITHIN = "within 1 std of best"
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


def require_metric(runs: pd.DataFrame, metric: str) -> None:
    if f"metrics.{metric}" not in runs.columns:
        raise GenreExpError(
            f"--metric {metric}: no run has it; metrics present: "
            + ", ".join(sorted(c[8:] for c in runs.columns if c.startswith("metrics.")))[:400]
        )


def comparison_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run, best first by ``metric`` (lowest first for a loss); runs without it
    last."""
    require_metric(runs, metric)
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


def param_names(value: str) -> list[str]:
    """``a.b,c.d`` (``params.`` prefixes allowed, as in a search filter) as param names."""
    return [name.strip().removeprefix("params.") for name in value.split(",") if name.strip()]


def require_params(runs: pd.DataFrame, names: list[str], option: str) -> None:
    present = sorted(c.removeprefix("params.") for c in runs.columns if c.startswith("params."))
    for name in names:
        if name not in present:
            close = difflib.get_close_matches(name, present, n=3)
            hint = (
                f"did you mean {' or '.join(close)}?"
                if close
                else "params present: " + ", ".join(present)[:400]
            )
            raise GenreExpError(f"{option} {name}: no run has this param; {hint}")


def seed_order(value: str) -> tuple:
    """Seeds in numeric order (2 before 10), anything else after, as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


@dataclass
class Groups:
    """Runs grouped into configurations, best first by the metric's mean."""

    # One row per configuration: its params, run count, seeds, each score's mean and std (the
    # sample std, n-1), whether the metric's mean is within noise of the best, its run ids.
    table: pd.DataFrame
    # The params that name a configuration: the table's first columns.
    params: list[str]
    seeds: list[str]
    scores: list[str]
    genres: list[str]
    # Params (outside --group-by) that differ between runs of one configuration.
    varying_within: list[str]
    # Runs not FINISHED: not averaged (a killed run's numbers are of a shorter training).
    left_out: int


def grouped_table(
    runs: pd.DataFrame, metric: str, group_by: list[str] | None, seeds: list[str]
) -> Groups:
    """Runs equal in every param but ``seeds`` (or equal in the ``group_by`` params) as one
    row each: mean and std of every score over the group's FINISHED runs."""
    require_metric(runs, metric)
    require_params(runs, seeds, "--seed-params")
    if group_by is not None:
        require_params(runs, group_by, "--group-by")
        for name in group_by:
            if name in seeds:
                raise GenreExpError(
                    f"--group-by {name}: it is a seed (--seed-params {','.join(seeds)}); a "
                    "configuration is what stays the same when the seeds change"
                )
    finished = runs.loc[runs["status"].eq("FINISHED")]
    if finished.empty:
        raise GenreExpError(f"--group-by: none of the {len(runs)} runs is FINISHED")
    if group_by is None:
        params = [
            c.removeprefix("params.")
            for c in differing_params(finished)
            if c.removeprefix("params.") not in seeds
        ]
    else:
        params = group_by
    # A param a run lacks (another family's setting) is a value of its own, not a wildcard.
    keys = [finished[f"params.{p}"].fillna("∅").rename(p) for p in params]
    grouper = keys or pd.Series(0, index=finished.index)
    per_genre = genre_columns(finished)
    scores = [s for s in dict.fromkeys([metric, *SCORES]) if f"metrics.{s}" in finished.columns]
    minutes = (finished["end_time"] - finished["start_time"]).dt.total_seconds() / 60
    rows = []
    for _, group in finished.groupby(grouper, sort=False):
        row: dict = {p: group[f"params.{p}"].iloc[0] for p in params}
        row["runs"] = len(group)
        for seed in seeds:
            values = group[f"params.{seed}"].fillna("∅").astype(str)
            row[seed] = " ".join(sorted(values, key=seed_order))
        for column, name in [(f"metrics.{s}", s) for s in scores] + [
            (c, f"f1 {c.removeprefix('metrics.test_f1_')}") for c in per_genre
        ]:
            row[f"{name} mean"] = group[column].mean()
            row[f"{name} std"] = group[column].std()
        row["minutes mean"] = minutes[group.index].mean()
        row["run_ids"] = " ".join(group["run_id"])
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(
        f"{metric} mean", ascending=lower_is_better(metric), na_position="last", kind="stable"
    )
    table.insert(table.columns.get_loc(f"{metric} std") + 1, WITHIN, within_noise(table, metric))
    numbers = [c for c in table.columns if c.endswith((" mean", " std"))]
    table[numbers] = table[numbers].astype(float).round(4)
    varying = [
        c
        for c in differing_params(finished)
        if c.removeprefix("params.") not in [*params, *seeds]
        and finished[c].fillna("∅").groupby(grouper).nunique().gt(1).any()
    ]
    return Groups(
        table=table.reset_index(drop=True),
        params=params,
        seeds=seeds,
        scores=scores,
        genres=[c.removeprefix("metrics.test_f1_") for c in per_genre],
        varying_within=[c.removeprefix("params.") for c in varying],
        left_out=len(runs) - len(finished),
    )


def within_noise(table: pd.DataFrame, metric: str) -> list[str]:
    """For each group (best first): is its mean of ``metric`` within one std of the best
    group's mean, taking the larger of the two groups' stds? "unknown" when neither has a std
    (one run each) or the group has no value."""
    means, stds = table[f"{metric} mean"].to_numpy(), table[f"{metric} std"].to_numpy()
    answers = []
    for k, (mean, std) in enumerate(zip(means, stds, strict=True)):
        noise = max((s for s in (std, stds[0]) if not pd.isna(s)), default=None)
        if k == 0 and not pd.isna(mean):
            answers.append("best")
        elif pd.isna(mean) or pd.isna(means[0]) or noise is None:
            answers.append("unknown")
        else:
            # A hair of slack: a gap of exactly one std must not fall out on a rounding error.
            answers.append("yes" if abs(mean - means[0]) <= noise + 1e-12 else "no")
    return answers


def grouped_markdown(groups: Groups) -> str:
    """The grouped table as people read it: "mean ± std" per score, per-genre means."""
    table = groups.table
    shown = table[[*groups.params, "runs", *groups.seeds]].copy()
    for score in groups.scores:
        shown[score] = [
            f"{m:.4f}" if pd.isna(s) else f"{m:.4f} ± {s:.4f}"
            for m, s in zip(table[f"{score} mean"], table[f"{score} std"], strict=True)
        ]
        if score == groups.scores[0]:
            shown[WITHIN] = table[WITHIN]
    for genre in groups.genres:
        shown[f"f1 {genre}"] = [f"{m:.3f}" for m in table[f"f1 {genre} mean"]]
    shown["minutes"] = [f"{m:.1f}" for m in table["minutes mean"]]
    # As written: tabulate would turn "0.3000" into 0.3, beside "0.3500 ± 0.0200".
    return shown.to_markdown(index=False, disable_numparse=True)


def group_labels(groups: Groups) -> list[str]:
    table = groups.table
    return [
        (", ".join(f"{p}={table.at[k, p]}" for p in groups.params) or "all runs")
        + f" (n={table.at[k, 'runs']})"
        for k in table.index
    ]


def per_genre_group_frames(groups: Groups, top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Genres as rows, the top configurations as columns: per-genre F1 means and stds."""
    labels = group_labels(groups)[:top]
    frames = []
    for stat in ("mean", "std"):
        columns = [f"f1 {g} {stat}" for g in groups.genres]
        frame = groups.table.head(top)[columns].T
        frame.index, frame.columns = groups.genres, labels
        frames.append(frame)
    return frames[0], frames[1]


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
    parser.add_argument(
        "--group-by",
        nargs="?",
        const="",
        metavar="PARAM[,PARAM...]",
        help="one row per configuration (runs equal in every param but the seeds or, given "
        "params, in these): mean ± std of each score, best mean first, and whether each mean "
        "is within one std of the best",
    )
    parser.add_argument(
        "--seed-params",
        default=",".join(SEED_PARAMS),
        metavar="PARAM[,PARAM...]",
        help="with --group-by, the params whose runs repeat one configuration (default: "
        "%(default)s; add data.seed to count other subsamples and validation splits as noise)",
    )
    parser.add_argument(
        "--top", type=int, default=5, help="runs (configurations) in the per-genre F1 figure"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for compare.csv, compare.md, per_genre_f1.png and, with --group-by, "
        "their *_grouped.* (default: outputs/compare/<experiment>[-<sweep>])",
    )
    add_tracking_uri(parser)
    args = parser.parse_args(argv)
    with one_line_errors("genre-exp compare"):
        run(args, Path(project_root()))


def run(args: argparse.Namespace, root: Path) -> None:
    from genre_exp.config import tracking_uri
    from genre_exp.tracking.queries import search_runs

    uri = tracking_uri(args.tracking_uri)
    runs = search_runs(uri, args.experiment, args.filter, args.sweep)
    table = comparison_table(runs, args.metric)
    groups = None
    if args.group_by is not None:
        group_by = param_names(args.group_by) or None
        groups = grouped_table(runs, args.metric, group_by, param_names(args.seed_params))
    out = args.out or root / "outputs" / "compare" / (
        args.experiment + (f"-{args.sweep[:8]}" if args.sweep else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    markdown, written = write_runs(table, out, args.top)
    if groups is None:
        print(markdown)
        print(f"\n{len(table)} runs of {args.experiment!r}, by {args.metric}; written: ", end="")
    else:
        markdown, more = write_groups(groups, out, args.top)
        written += more
        print(markdown)
        print(
            f"\n{len(groups.table)} configurations from {groups.table['runs'].sum()} FINISHED "
            f"runs of {args.experiment!r}, by the mean of {args.metric}; seeds: "
            + ", ".join(groups.seeds)
        )
        if groups.left_out:
            print(f"{groups.left_out} runs not FINISHED left out")
        if groups.varying_within:
            print(f"note: {', '.join(groups.varying_within)} also differ inside a configuration")
        if groups.table["runs"].max() == 1:
            print("each configuration has one run, so no std: repeat, e.g. -m training.seed=1,2,3")
        print("written: ", end="")
    print(", ".join(map(str, written)))


def write_runs(table: pd.DataFrame, out: Path, top: int) -> tuple[str, list[Path]]:
    from genre_exp import plots

    table.to_csv(out / "compare.csv", index=False)
    markdown = table.drop(columns="run_id").to_markdown(index=False)
    (out / "compare.md").write_text(markdown + "\n", encoding="utf-8")
    plots.save(plots.per_genre_f1_figure(per_genre_frame(table, top)), out / "per_genre_f1.png")
    return markdown, [out / "compare.csv", out / "compare.md", out / "per_genre_f1.png"]


def write_groups(groups: Groups, out: Path, top: int) -> tuple[str, list[Path]]:
    from genre_exp import plots

    groups.table.to_csv(out / "compare_grouped.csv", index=False)
    markdown = grouped_markdown(groups)
    (out / "compare_grouped.md").write_text(markdown + "\n", encoding="utf-8")
    means, stds = per_genre_group_frames(groups, top)
    title = "Per-genre test F1, mean ± std over seeds, best first"
    plots.save(plots.per_genre_f1_figure(means, stds, title), out / "per_genre_f1_grouped.png")
    names = ("compare_grouped.csv", "compare_grouped.md", "per_genre_f1_grouped.png")
    return markdown, [out / name for name in names]
