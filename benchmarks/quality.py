"""Test scores on one corpus, each over repeated seeds: the seed's three experiments as the seed
ran them, every model family with its YAML defaults and honest validation settings, and
``experiment=best``. Prints a Markdown table and writes JSON.

Each row is one sweep over its seeds, run as a user runs it (repeated seeds are a sweep)::

    python -m genre_exp -m <row> <data> 'data.seed=${training.seed}' training.seed=1,2,3

training.seed draws initial weights, dropout and batch order; data.seed, tied to it, draws the
validation split, and with it the training rows (whole artists move with data.val_split=
by_artist) and any undersampling. Both vary: tfidf_linear's fit (lbfgs) draws nothing, so
training.seed alone would give it a std of 0, and every row's std should be the same kind of
noise. The test split never changes.

The runs are read back with ``genre-exp compare --group-by --seed-params
training.seed,data.seed``: mean and std (n-1) of the test scores over the row's runs.
``train_seconds`` is the mean MLflow run duration (vectorise, fit, evaluate, log the model; not
process start-up or reading the files); ``wall_seconds`` is the whole sweep's. ``run_id`` is
the median-scoring seed's run, whose model is logged. The runs stay in one MLflow store under
``--work``, so the run ids stay valid; ``--only`` reruns rows and replaces them in ``--out``.

    python benchmarks/quality.py --train-path DIR/train.parquet --test-path DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" --corpus lyrics-real
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    SEED_KAGGLE,
    add_data_arguments,
    check,
    data_overrides,
    genre_exp,
    machine,
    measure,
    write_json,
)

EXPERIMENT = "quality"
SEED_PARAMS = "training.seed,data.seed"
# How an honest user validates a family, as the hparams_search presets do: whole artists held
# out (the test split is other artists), every genre weighing the same in validation scores
# and in training (the test split is near balanced, the training split not), early stopping
# on validation macro-F1.
HONEST = (
    "data.val_split=by_artist",
    "data.val_weights=balanced",
    "training.class_weight=balanced",
    "training.early_stopping.monitor=val_macro_f1",
)


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]


def family(name: str) -> Row:
    return Row(name, (f"model={name}", *HONEST))


# In the order they run: the cheapest and most telling first, seed_unbalanced (~28 min a seed
# on 2 cores) last. The seed presets run as the seed ran them, without HONEST.
ROWS = [
    Row("best", ("experiment=best",)),
    family("tfidf_linear"),
    family("pool"),
    family("fasttext"),
    family("cnn"),
    family("lstm_dropout"),
    family("bigru"),
    family("bilstm"),
    Row("seed_balanced", ("experiment=seed_balanced",)),
    Row("seed_balanced_dropout", ("experiment=seed_balanced_dropout",)),
    Row("seed_unbalanced", ("experiment=seed_unbalanced",)),
]


def seed_list(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected seeds such as 1,2,3") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{value!r}: a seed repeated")
    return seeds


def run_row(row: Row, seeds: list[int], args, work: Path, batch: str, uri: str) -> dict:
    """The row's sweep over ``seeds``, then its numbers as ``compare`` groups them."""
    command = genre_exp(
        "-m",
        *row.overrides,
        *data_overrides(args.train_path, args.test_path, args.genres),
        "data.seed=${training.seed}",
        f"training.seed={','.join(map(str, seeds))}",
        f"mlflow.experiment_name={EXPERIMENT}",
        f"+tags.quality_row={row.name}",
        f"+tags.quality_batch={batch}",
        "training.verbose=2",
        *args.override,
    )
    log = work / "logs" / f"{batch}-{row.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n[{row.name}] $", shlex.join(command), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["GENRE_EXP_ROOT"] = str(work)
    load_start = os.getloadavg()
    measured = measure(command, env, log)
    load_end = os.getloadavg()
    check(measured, row.name, log)
    grouped, runs = read_back(row.name, batch, uri, work / "compare" / f"{batch}-{row.name}")
    if len(runs) != len(seeds):
        sys.exit(f"{row.name}: {len(runs)} FINISHED runs for {len(seeds)} seeds (log: {log})")
    # The median-scoring seed's run: the row's typical model, not its luckiest.
    ranked = runs.sort_values("test_macro_f1", kind="stable")
    median = ranked.iloc[(len(ranked) - 1) // 2]
    require_logged_model(uri, median["run_id"])
    result = {
        "name": row.name,
        "run_id": median["run_id"],
        "test_accuracy": number(grouped["test_accuracy mean"]),
        "test_macro_f1": number(grouped["test_macro_f1 mean"]),
        "test_macro_f1_std": number(grouped["test_macro_f1 std"]),
        "train_seconds": round(float(grouped["minutes mean"]) * 60, 1),
        "test_accuracy_std": number(grouped["test_accuracy std"]),
        "val_macro_f1": number(grouped["final_val_macro_f1 mean"]),
        "seeds": [int(s) for s in runs["seed"]],
        "test_macro_f1_per_seed": [number(v) for v in runs["test_macro_f1"]],
        "run_ids": list(runs["run_id"]),
        "overrides": list(row.overrides),
        "extra_overrides": args.override,
        "wall_seconds": round(measured.seconds, 1),
        "cpu_seconds": round(measured.cpu_seconds, 1),
        "max_rss_mb": round(measured.max_rss_mb),
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in load_end],
        "batch": batch,
    }
    if row.name in SEED_KAGGLE:
        result["seed_on_kaggle_not_this_corpus"] = SEED_KAGGLE[row.name]
    print(
        f"[{row.name}] test macro-F1 {result['test_macro_f1']:.4f} ± "
        f"{result['test_macro_f1_std'] or 0:.4f}, {result['train_seconds']:.0f} s a run",
        flush=True,
    )
    return result


def read_back(name: str, batch: str, uri: str, out: Path):
    """``genre-exp compare --group-by`` over the row's runs: its one configuration (mean and
    std of each score) and its FINISHED runs, in seed order."""
    import mlflow
    import pandas as pd

    command = genre_exp(
        "compare",
        "--tracking-uri",
        uri,
        "--experiment",
        EXPERIMENT,
        "--filter",
        f"tags.quality_row = '{name}' and tags.quality_batch = '{batch}'",
        "--group-by",
        "--seed-params",
        SEED_PARAMS,
        "--out",
        str(out),
    )
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{name}: genre-exp compare failed:\n{done.stderr[-3000:]}")
    grouped = pd.read_csv(out / "compare_grouped.csv")
    if len(grouped) != 1:
        sys.exit(f"{name}: its runs differ in more than the seeds ({out / 'compare_grouped.md'})")
    runs = pd.read_csv(out / "compare.csv")
    runs = runs.loc[runs["status"].eq("FINISHED")].copy()
    client = mlflow.MlflowClient(uri)
    runs["seed"] = [int(client.get_run(r).data.params["training.seed"]) for r in runs["run_id"]]
    return grouped.iloc[0], runs.sort_values("seed").reset_index(drop=True)


def require_logged_model(uri: str, run_id: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    if "python_function" not in info.flavors:
        sys.exit(f"run {run_id}: its logged model has no pyfunc flavour")


def number(value) -> float | None:
    """A score as JSON takes it: NaN (the std of one seed) is null."""
    value = float(value)
    return None if value != value else round(value, 4)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | seeds | test accuracy | test macro-F1 (mean ± std) | train min a run "
        "| seed notebook on Kaggle, another data set (acc / macro-F1) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = r["test_macro_f1_std"]
        f1 = (
            f"{r['test_macro_f1']:.3f} ± {std:.3f}"
            if std is not None
            else (f"{r['test_macro_f1']:.3f} (1 seed, no std)")
        )
        seed = r.get("seed_on_kaggle_not_this_corpus")
        kaggle = f"{seed['accuracy']:.2f} / {seed['macro_f1']:.2f}" if seed else "-"
        name = " ".join(o for o in r["overrides"] if not o.startswith(("data.", "training.")))
        lines.append(
            f"| `{name}` | {len(r['seeds'])} | {r['test_accuracy']:.3f} | {f1} "
            f"| {r['train_seconds'] / 60:.1f} | {kaggle} |"
        )
    return "\n".join(lines)


def main() -> None:
    names = [row.name for row in ROWS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"rows to run: {names}"
    )
    parser.add_argument("--seeds", type=seed_list, default=[1, 2, 3], help="default: 1,2,3")
    parser.add_argument(
        "--seed-unbalanced-seeds",
        type=seed_list,
        default=[1],
        help="seed_unbalanced's seeds (default: 1; each takes ~28 min on 2 cores, so its std "
        "is null unless more are given)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "outputs" / "benchmarks" / "quality",
        help="project root of the runs: their MLflow store, logs and data cache; kept, so the "
        "run ids stay valid (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra Hydra override for every run (repeatable), e.g. data.max_train_rows=500 "
        "for a quick check",
    )
    args = parser.parse_args()

    from genre_exp.config import default_tracking_uri

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    work = args.work.resolve()
    uri = default_tracking_uri(str(work))
    started = machine()
    batch = started["date"]
    chosen = [row for row in ROWS if not args.only or row.name in args.only]
    # Rows not run this time are kept from an earlier run on the same corpus (--only).
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = {r["name"]: r for r in earlier.get("rows", []) if earlier.get("corpus") == args.corpus}
    batches = (earlier.get("batches") or {earlier["date"]: batch_record(earlier)}) if kept else {}
    batches[batch] = batch_record({"command": command_line(), **started})
    rows: list[dict] = []
    for row in chosen:
        seeds = args.seed_unbalanced_seeds if row.name == "seed_unbalanced" else args.seeds
        kept[row.name] = run_row(row, seeds, args, work, batch, uri)
        rows = [kept[name] for name in names if name in kept]
        # Written after every row: a failure hours in keeps the rows done.
        used = {r["batch"] for r in rows}
        batches = {b: record for b, record in batches.items() if b in used}
        write_json(args.out, payload(args, uri, started, rows, batches))
    print(f"\n{args.corpus}: test split {args.test_path}; {os.cpu_count()} CPU cores\n")
    print(markdown(rows))
    print(
        "\nSeeds: training.seed and data.seed together (see the JSON's seed_note); train min: "
        "mean MLflow run time on a shared machine (load averages in the JSON)."
    )


def command_line() -> str:
    return shlex.join(["python", "benchmarks/quality.py", *sys.argv[1:]])


def batch_record(source: dict) -> dict:
    """What a batch of rows (one run of this script) was measured with."""
    return {key: source[key] for key in ("command", "git_commit", "git_dirty", "date")}


def payload(args, uri: str, started: dict, rows: list[dict], batches: dict) -> dict:
    return {
        "corpus": args.corpus,
        "train": str(args.train_path),
        "test": str(args.test_path),
        "genres": args.genres,
        "command": command_line(),
        # Each row's "batch": the run of this script that measured it (--only keeps the rest).
        "batches": batches,
        "row_command": "python -m genre_exp -m <overrides> <data> 'data.seed=${training.seed}' "
        "training.seed=<seeds> mlflow.experiment_name=quality",
        "read_back": f"genre-exp compare --group-by --seed-params {SEED_PARAMS}",
        "seed_note": "each seed sets training.seed and data.seed (the validation split, so "
        "the training rows, and any undersampling); the test split is fixed; std is the "
        "sample std (n-1), null for one seed (seed_unbalanced by default: ~28 min a seed)",
        "honest_overrides": list(HONEST),
        "train_seconds_note": "mean MLflow run duration of the row's runs (vectorise, fit, "
        "evaluate, log the model); the machine is shared, so times are inflated by its load",
        "seed_on_kaggle_note": "the seed notebook's scores on Kaggle's test split: another "
        "data set, for reference only",
        "tracking_uri": uri,
        "experiment": EXPERIMENT,
        **{k: v for k, v in started.items() if k != "load_average"},
        "load_average_at_start": [round(x, 2) for x in started["load_average"]],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "finished": datetime.now().strftime("%Y-%m-%d_%H-%M-%S"),
        "rows": rows,
    }


if __name__ == "__main__":
    main()
