"""The tables ``genre-exp compare`` shows, from a frame of runs as ``mlflow.search_runs`` returns
it: one row per run, sorted by a metric, with the params that differ; or, with --group-by, one
row per configuration (runs equal but for their seeds), each score's mean and std, and whether
it is within the noise of the best. Pure pandas: reading the runs and writing the files is the
command's.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
from dataclasses import dataclass

import pandas as pd

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
# MLflow copies a logged model's model_config into its run's params: ``genres`` is
# data.genres again, and a run without a model (pruned, mlflow.log_model=false) lacks it.
MODEL_CONFIG_PARAMS = ("genres",)


def differing_params(runs: pd.DataFrame) -> list[str]:
    columns = [
        c
        for c in runs.columns
        if c.startswith("params.")
        and not c.removeprefix("params.").startswith(NOISE_PARAMS)
        and c.removeprefix("params.") not in MODEL_CONFIG_PARAMS
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
