"""``genre-exp compare``: one table for many runs.

Runs of an experiment (optionally one sweep, or an MLflow search filter), sorted by a metric,
with the params that differ between them, test scores, per-genre F1 and duration; written as
CSV and Markdown, with a figure of per-genre F1 for the top runs. With --group-by, runs that
repeat one configuration with other seeds are one row: mean and std of each score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from genre_exp.commands import add_tracking_uri, one_line_errors, plural
from genre_exp.comparison import (
    SEED_PARAMS,
    Groups,
    comparison_table,
    differing_params,
    grouped_markdown,
    grouped_table,
    param_names,
    per_genre_frame,
    per_genre_group_frames,
)


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
        print(
            f"\n{plural(len(table), 'run')} of {args.experiment!r}, by {args.metric}; written: ",
            end="",
        )
    else:
        markdown, more = write_groups(groups, out, args.top)
        written += more
        print(markdown)
        print(
            f"\n{plural(len(groups.table), 'configuration')} from "
            f"{plural(groups.table['runs'].sum(), 'FINISHED run')} "
            f"of {args.experiment!r}, by the mean of {args.metric}; seeds: "
            + ", ".join(groups.seeds)
        )
        if groups.left_out:
            print(f"{plural(groups.left_out, 'run')} not FINISHED left out")
        if groups.varying_within:
            print(f"note: {', '.join(groups.varying_within)} also differ inside a configuration")
        if groups.table["runs"].max() == 1:
            print(one_run_hint(runs, groups.seeds))
        print("written: ", end="")
    print(", ".join(map(str, written)))


def one_run_hint(runs: pd.DataFrame, seeds: list[str]) -> str:
    """Why no configuration has a std: often a second seed (``data.seed=${training.seed}``)
    that is not counted as one."""
    other_seeds = [
        name
        for name in (c.removeprefix("params.") for c in differing_params(runs))
        if name.endswith(".seed") and name not in seeds
    ]
    if other_seeds:
        return (
            f"each configuration has one run, so no std: {', '.join(other_seeds)} also differ; "
            f"if they repeat a configuration, add them: --seed-params "
            + ",".join([*seeds, *other_seeds])
        )
    return "each configuration has one run, so no std: repeat, e.g. -m training.seed=1,2,3"


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
