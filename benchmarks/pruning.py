"""What pruning buys an Optuna search: the same search preset run twice for the same wall-clock
budget, with its pruner and with none (``hydra.sweeper.pruner=none``); trials finished per
hour and the best validation macro-F1 of each.

Each search runs as a user runs it (``python -m genre_exp -m hparams_search=<preset>`` in a
subprocess) with the sweeper's ``timeout`` as the budget: no trial starts after it, the running
one finishes (its overrun is in the wall time, so trials per hour are over the real time). Each
run has its own project root (MLflow store, Optuna study, data cache), so both start cold. The
same sampler seed draws the same first trials in both. Models are not logged (the same cost in
both, and no part of the search). Prints a Markdown table and writes JSON.

    python benchmarks/pruning.py --train DIR/train.parquet --test DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --preset pool_optuna --budget 900
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quote_genre(genre: str) -> str:
    # Hydra's override grammar needs quotes around values with characters such as '&'.
    return genre if genre.replace("-", "").replace("_", "").isalnum() else f"'{genre}'"


def search(arm: str, pruner: dict, args: argparse.Namespace, work: Path) -> dict:
    """One search of the preset for the budget with ``pruner`` (the preset's, or none); its
    figures, read back from its study."""
    import mlflow
    import optuna
    from optuna.trial import TrialState

    root = work / arm
    study_name = f"bench-{arm}"
    genres = ",".join(quote_genre(g) for g in args.genres.split(","))
    command = [
        sys.executable,
        "-m",
        "genre_exp",
        "-m",
        f"hparams_search={args.preset}",
        f"paths.root_dir={root}",
        f"data.train_path={args.train}",
        f"data.test_path={args.test}",
        f"data.genres=[{genres}]",
        "mlflow.log_model=false",
        "training.verbose=0",
        f"hydra.sweeper.study_name={study_name}",
        # The budget ends the search, not the trial count.
        "hydra.sweeper.n_trials=10000",
        f"hydra.sweeper.timeout={args.budget}",
        *([] if pruner["pruner"] != "none" else ["hydra.sweeper.pruner=none"]),
        *args.override,
    ]
    print("$", " ".join(command), flush=True)
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(work / f"{arm}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{root}/mlruns/optuna.db")
    trials = study.get_trials(deepcopy=False)
    count = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    finished = count["complete"] + count["pruned"]
    best = study.best_trial
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    best_run = client.get_run(best.user_attrs["mlflow_run_id"])
    epochs = sum(len(t.intermediate_values) for t in trials)
    return {
        "arm": arm,
        "pruner": pruner,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average_at_start": round(load_before, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "trials": count,
        "trials_finished": finished,
        "trials_per_hour": round(finished / wall * 3600, 1),
        "epochs_trained": epochs,
        "epochs_per_trial": round(epochs / finished, 2) if finished else None,
        "best_val_macro_f1": best.value,
        "best_trial": best.number,
        "best_params": best.params,
        "best_test_macro_f1": best_run.data.metrics.get("test_macro_f1"),
        "best_reached_after_seconds": round(
            (best.datetime_complete - trials[0].datetime_start).total_seconds(), 1
        ),
        "root": str(root),
    }


def preset_pruner(preset: str) -> dict:
    """The pruner the preset chooses, with the settings its file gives."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.load(ROOT / "conf" / "hparams_search" / f"{preset}.yaml").hydra.sweeper
    kind = str(sweeper.pruner)
    settings = OmegaConf.select(sweeper, f"pruners.{kind}")
    return {"pruner": kind, "settings": OmegaConf.to_container(settings) if settings else {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--genres", required=True, help="comma-separated, in label order")
    parser.add_argument("--corpus", required=True, help="name of the data set, for the record")
    parser.add_argument("--preset", default="pool_optuna", help="a Keras family's search")
    parser.add_argument("--budget", type=float, default=900, help="seconds per search")
    parser.add_argument(
        "--work",
        default=str(ROOT / "outputs" / "benchmarks" / "pruning"),
        help="each search's project root goes under <work>/<date>/",
    )
    parser.add_argument("--out", default="benchmarks/results/pruning.json")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args()

    from genre_exp.tracking.record import git_commit

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    work = Path(args.work) / stamp
    work.mkdir(parents=True)
    pruner = preset_pruner(args.preset)
    if pruner["pruner"] == "none":
        sys.exit(f"pruning.py: {args.preset} prunes nothing; choose a preset with a pruner")
    arms = [
        search("pruned", pruner, args, work),
        search("unpruned", {"pruner": "none"}, args, work),
    ]

    print(
        f"\n{args.preset} on {args.corpus}, {args.budget:.0f} s per search; "
        f"{os.cpu_count()} CPU cores\n"
    )
    print(
        "| search | trials finished (pruned) | trials/hour | epochs/trial | best val macro-F1 "
        "| its test macro-F1 | wall time | CPU time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for a in arms:
        print(
            f"| {a['arm']} | {a['trials_finished']} ({a['trials']['pruned']}) "
            f"| {a['trials_per_hour']:.1f} | {a['epochs_per_trial']} "
            f"| {a['best_val_macro_f1']:.4f} | {a['best_test_macro_f1']:.4f} "
            f"| {a['wall_seconds'] / 60:.1f} min | {a['cpu_seconds'] / 60:.1f} min |"
        )
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "preset": args.preset,
                "corpus": args.corpus,
                "train": args.train,
                "test": args.test,
                "genres": args.genres,
                "overrides": args.override,
                "budget_seconds": args.budget,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "git_commit": git_commit(ROOT),
                "date": stamp,
                "searches": arms,
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
