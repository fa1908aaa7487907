"""Run the seed's three experiments (``experiment=seed_*``) and compare with the seed's figures.

Each preset runs as the user would run it (``python -m genre_exp ...`` in a subprocess); its
numbers are read back from MLflow. Prints a Markdown table and writes JSON.

    python benchmarks/seed_presets.py --train DIR/train.parquet --test DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --out benchmarks/results/seed_presets_lyrics-real.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common import SEED_KAGGLE, quote_genre


def run_preset(preset: str, args: argparse.Namespace, stamp: str) -> dict:
    import mlflow

    run_name = f"bench/{preset}/{stamp}"
    genres = ",".join(quote_genre(g) for g in args.genres.split(","))
    command = [
        sys.executable,
        "-m",
        "genre_exp",
        f"experiment={preset}",
        f"data.train_path={args.train}",
        f"data.test_path={args.test}",
        f"data.genres=[{genres}]",
        f"mlflow.experiment_name={args.experiment}",
        f"mlflow.run_name={run_name}",
        "training.verbose=2",
        *args.override,
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    runs = mlflow.search_runs(
        experiment_names=[args.experiment], filter_string=f"attributes.run_name = '{run_name}'"
    )
    metrics = runs.iloc[0]
    return {
        "preset": preset,
        "run_id": metrics["run_id"],
        "test_accuracy": float(metrics["metrics.test_accuracy"]),
        "test_macro_f1": float(metrics["metrics.test_macro_f1"]),
        "test_weighted_f1": float(metrics["metrics.test_weighted_f1"]),
        "epochs_trained": int(metrics["metrics.epochs_trained"]),
        "train_rows": int(metrics["metrics.data_train_rows"]),
        "wall_seconds": round(seconds, 1),
        "seed_kaggle": SEED_KAGGLE.get(preset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--genres", required=True, help="comma-separated, in label order")
    parser.add_argument("--corpus", required=True, help="name of the data set, for the record")
    parser.add_argument("--presets", default=",".join(SEED_KAGGLE))
    parser.add_argument("--experiment", default="seed-presets")
    parser.add_argument("--out", default="benchmarks/results/seed_presets.json")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    import mlflow

    from genre_exp.config import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    results = [run_preset(p, args, stamp) for p in args.presets.split(",")]

    print(f"\nCorpus: {args.corpus} ({args.train}, {args.test}); {os.cpu_count()} CPU cores\n")
    print(
        "| preset | test accuracy | test macro-F1 | epochs | train rows | wall time "
        "| seed on Kaggle (acc / macro-F1) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        seed = r["seed_kaggle"]
        seed_text = f"{seed['accuracy']:.2f} / {seed['macro_f1']:.2f}" if seed else "-"
        print(
            f"| {r['preset']} | {r['test_accuracy']:.3f} | {r['test_macro_f1']:.3f} "
            f"| {r['epochs_trained']} | {r['train_rows']} | {r['wall_seconds'] / 60:.1f} min "
            f"| {seed_text} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "corpus": args.corpus,
                "train": args.train,
                "test": args.test,
                "genres": args.genres,
                "overrides": args.override,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "date": stamp,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
