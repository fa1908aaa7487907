"""A 4-job sweep that shares one data config (``genre-exp -m ... <setting>=a,b,c,d``) against
the same 4 jobs run as 4 separate ``genre-exp`` commands.

Each measurement starts from nothing: a fresh project root (``paths.root_dir``), so a fresh
MLflow store and an empty cache, and the first job of each side pays for reading, cleaning
and vectorising the data. Measurements alternate (sweep, separate, sweep, separate, ...) so a
busy spell on a shared machine slows both sides alike. Besides the wall times, the jobs' own
log lines say where the time went: start-up (the process until its first log line), data
(read and clean, or the cache), the MLflow store, inputs logged + TensorFlow's import + token
ids, training + evaluation, figures + the logged model, and the process's exit.

    python benchmarks/sweep.py --train-path DIR/train.parquet --test-path DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --pairs 2 --out benchmarks/results/sweep.json
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import (
    RESULTS,
    add_data_arguments,
    check,
    data_overrides,
    genre_exp,
    machine,
    measure,
    write_json,
)

# What the issue asks of the sweep: its time / the separate runs' time.
TARGET_RATIO = 0.80
EXPERIMENT = "sweep-benchmark"
# A job's log lines that end its phases, in order (the phase is named by what it ended).
PHASES = (
    ("start-up", r"\] - data from "),
    ("data", r"\] - data: \d+ train"),
    ("store", r"\] - MLflow run "),
    ("inputs, TensorFlow, token ids", r"\] - token ids "),
    ("training, evaluation", r"\] - test accuracy "),
    ("figures, logged model", r"\] - model logged"),
)
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def job_overrides(args: argparse.Namespace, root: Path) -> list[str]:
    return [
        *data_overrides(args.train_path, args.test_path, args.genres),
        f"model={args.model}",
        *([f"training.epochs={args.epochs}"] if args.epochs else []),
        "training.verbose=2",
        f"paths.root_dir={root}",
        f"mlflow.experiment_name={EXPERIMENT}",
        *args.override,
    ]


def phases(log: Path, started: float, ended: float) -> dict[str, float]:
    """Seconds per phase of every job the process ``log`` ran (summed over its jobs); a job's
    start-up runs from the end of the job before, the first from the process's start."""
    spent = dict.fromkeys([name for name, _ in PHASES] + ["exit"], 0.0)
    last = started
    for line in log.read_text(errors="replace").splitlines():
        stamp = STAMP.match(line)
        if not stamp:
            continue
        for name, pattern in PHASES:
            if re.search(pattern, line):
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                spent[name] += at - last
                last = at
    spent["exit"] += ended - last
    return spent


def finished_runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    # A sweep's parent run groups the jobs; only the jobs trained.
    return [r for r in runs if "test_macro_f1" in r.data.metrics and r.info.status == "FINISHED"]


def run_side(side: str, args: argparse.Namespace, k: int, tmp: Path, env: dict) -> dict:
    """One measurement of ``side`` ("sweep" or "separate") in a fresh project root."""
    root = tmp / f"{k}-{side}"
    root.mkdir()
    values = args.values.split(",")
    if side == "sweep":
        commands = [genre_exp("-m", *job_overrides(args, root), f"{args.setting}={args.values}")]
    else:
        commands = [genre_exp(*job_overrides(args, root), f"{args.setting}={v}") for v in values]
    seconds, cpu, spent = 0.0, 0.0, {}
    for n, command in enumerate(commands):
        log = root / f"{side}-{n}.log"
        started = time.time()
        measured = measure(command, env, log)
        check(measured, f"{side} {k} (command {n})", log)
        seconds += measured.seconds
        cpu += measured.cpu_seconds
        for name, value in phases(log, started, started + measured.seconds).items():
            spent[name] = spent.get(name, 0.0) + value
    runs = finished_runs(root)
    if len(runs) != len(values):
        raise SystemExit(f"{side} {k}: {len(runs)} finished runs, expected {len(values)}")
    cache = root / "outputs" / "cache"
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "processes": len(commands),
        "phases_seconds": {name: round(value, 2) for name, value in spent.items()},
        "runs_seconds": round(sum((r.info.end_time - r.info.start_time) / 1000 for r in runs), 2),
        "test_macro_f1": sorted(round(r.data.metrics["test_macro_f1"], 4) for r in runs),
        "cache_entries": sorted(p.name.split("-")[0] for p in cache.glob("*.pkl")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--pairs", type=int, default=2, help="sweep/separate pairs (default: 2)")
    parser.add_argument(
        "--model", default="pool", help="model option (default: pool, the fastest neural family)"
    )
    parser.add_argument(
        "--setting", default="model.embedding_dim", help="what the 4 jobs differ in"
    )
    parser.add_argument("--values", default="16,32,48,64", help="its values, comma-separated")
    parser.add_argument(
        "--epochs", type=int, help="training.epochs of every job (default: the schema's)"
    )
    parser.add_argument(
        "--override", action="append", default=[], help="another override for every job"
    )
    parser.add_argument("--out", default=str(RESULTS / "sweep.json"))
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    measurements = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for k in range(args.pairs):
            pair = {}
            for side in ("sweep", "separate"):
                pair[side] = run_side(side, args, k, Path(tmp), env)
                print(f"pair {k}: {side} {pair[side]['seconds']:.1f} s", flush=True)
            pair["ratio"] = round(pair["sweep"]["seconds"] / pair["separate"]["seconds"], 4)
            measurements.append(pair)
    report(args, measurements)


def report(args: argparse.Namespace, pairs: list[dict]) -> None:
    sweep = statistics.median(p["sweep"]["seconds"] for p in pairs)
    separate = statistics.median(p["separate"]["seconds"] for p in pairs)
    ratio = statistics.median(p["ratio"] for p in pairs)
    jobs = len(args.values.split(","))
    epochs = f"training.epochs={args.epochs}" if args.epochs else "training as the schema says"
    print(f"\n{args.corpus}: {jobs} jobs ({args.setting}={args.values}), model={args.model}, ")
    print(f"{epochs}; {os.cpu_count()} cores\n")
    print("| pair | sweep | separate | ratio |")
    print("|---|---|---|---|")
    for k, pair in enumerate(pairs):
        print(
            f"| {k} | {pair['sweep']['seconds']:.1f} s | {pair['separate']['seconds']:.1f} s "
            f"| {pair['ratio']:.3f} |"
        )
    print(f"| median | {sweep:.1f} s | {separate:.1f} s | {ratio:.3f} (target <= {TARGET_RATIO}) |")
    print("\nWhere the time went (seconds, median over the pairs, summed over the jobs):\n")
    print("| phase | sweep | separate |")
    print("|---|---|---|")
    names = list(pairs[0]["sweep"]["phases_seconds"])
    medians = {
        side: {n: statistics.median(p[side]["phases_seconds"][n] for p in pairs) for n in names}
        for side in ("sweep", "separate")
    }
    for name in names:
        print(f"| {name} | {medians['sweep'][name]:.1f} | {medians['separate'][name]:.1f} |")
    write_json(
        args.out,
        {
            "ratio": round(ratio, 4),
            "target_ratio": TARGET_RATIO,
            "met": ratio <= TARGET_RATIO,
            "sweep_seconds": round(sweep, 2),
            "separate_seconds": round(separate, 2),
            "phases_seconds_median": medians,
            "pairs": pairs,
            "corpus": args.corpus,
            "jobs": jobs,
            "model": args.model,
            "setting": args.setting,
            "values": args.values.split(","),
            "epochs": args.epochs,
            "overrides": args.override,
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
