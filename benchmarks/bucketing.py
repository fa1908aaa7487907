"""The same LSTM trained with and without length-bucketed batches
(``training.bucket_by_length``): seconds per epoch and test macro-F1 of each.

Token ids are padded to ``data.sequence_length`` (500), while most lyrics are much shorter; a
bucketed batch holds lyrics of similar length and is padded only to its longest, so a recurrent
layer runs fewer steps. Runs alternate (plain, bucketed, then bucketed, plain, ...), each a fresh
``genre-exp`` process with early stopping off, so every run trains the same number of epochs.
Training time is read from the run: from its token ids being ready (its log line) to the last
epoch's metrics in MLflow (training, the validation passes, the epochs' callbacks); seconds per
epoch is that over the epochs. Each epoch's own time is kept too (the first also builds
TensorFlow's graphs); on a shared machine single epochs vary more than their sum.

    python benchmarks/bucketing.py --train-path DIR/train.parquet --test-path DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --pairs 2 --epochs 3 --out benchmarks/results/bucketing.json
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

EXPERIMENT = "bucketing-benchmark"
SIDES = {"plain": "false", "bucketed": "true"}
# The log line after which training starts (the token ids are ready).
TOKENS_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*\] - token ids ")


def command(args: argparse.Namespace, root: Path, side: str, name: str) -> list[str]:
    return genre_exp(
        *data_overrides(args.train_path, args.test_path, args.genres),
        "data.val_split=by_artist",
        "data.val_weights=balanced",
        f"model={args.model}",
        "training.class_weight=balanced",
        f"training.epochs={args.epochs}",
        "training.early_stopping.enabled=false",
        f"training.bucket_by_length={SIDES[side]}",
        "training.verbose=2",
        f"paths.root_dir={root}",
        f"mlflow.experiment_name={EXPERIMENT}",
        f"mlflow.run_name={name}",
        *args.override,
    )


def result(root: Path, name: str, log: Path) -> dict:
    """Epoch times (from the epochs' metric timestamps) and test scores of run ``name``."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs(
        [experiment.experiment_id], f"attributes.run_name = '{name}'", max_results=1
    )
    ends = [m.timestamp / 1000 for m in client.get_metric_history(run.info.run_id, "val_loss")]
    ready = next(
        datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for match in map(TOKENS_LINE.match, log.read_text(errors="replace").splitlines())
        if match
    )
    epochs = [b - a for a, b in zip([ready, *ends], ends, strict=False)]
    return {
        "epochs": len(epochs),
        "seconds_per_epoch": round((ends[-1] - ready) / len(epochs), 2),
        "epoch_seconds": [round(e, 2) for e in epochs],
        "training_seconds": round(ends[-1] - ready, 2),
        "test_macro_f1": round(run.data.metrics["test_macro_f1"], 4),
        "test_accuracy": round(run.data.metrics["test_accuracy"], 4),
        "final_val_macro_f1": round(run.data.metrics["final_val_macro_f1"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--pairs", type=int, default=2, help="plain/bucketed pairs (default: 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    parser.add_argument("--model", default="lstm", help="model option (default: lstm)")
    parser.add_argument(
        "--override", action="append", default=[], help="another override for every run"
    )
    parser.add_argument("--out", default=str(RESULTS / "bucketing.json"))
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    pairs = []
    with tempfile.TemporaryDirectory(prefix="bucketing-bench-") as tmp:
        root = Path(tmp)
        for k in range(args.pairs):
            order = list(SIDES) if k % 2 == 0 else list(reversed(SIDES))
            pair: dict = {"order": order}
            for side in order:
                name, log = f"{side}-{k}", root / f"{side}-{k}.log"
                started = time.perf_counter()
                check(measure(command(args, root, side, name), env, log), name, log)
                pair[side] = result(root, name, log)
                pair[side]["wall_seconds"] = round(time.perf_counter() - started, 2)
                print(
                    f"pair {k}: {side} {pair[side]['seconds_per_epoch']:.1f} s/epoch, "
                    f"test macro-F1 {pair[side]['test_macro_f1']:.4f}",
                    flush=True,
                )
            pair["ratio"] = round(
                pair["bucketed"]["seconds_per_epoch"] / pair["plain"]["seconds_per_epoch"], 4
            )
            pairs.append(pair)
    report(args, pairs)


def report(args: argparse.Namespace, pairs: list[dict]) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(p[side][key] for p in pairs)

    ratio = statistics.median(p["ratio"] for p in pairs)
    print(f"\n{args.corpus}: model={args.model}, {args.epochs} epochs; {os.cpu_count()} cores\n")
    print("| pair | plain s/epoch | bucketed s/epoch | ratio | plain F1 | bucketed F1 |")
    print("|---|---|---|---|---|---|")
    for k, p in enumerate(pairs):
        print(
            f"| {k} | {p['plain']['seconds_per_epoch']:.1f} | "
            f"{p['bucketed']['seconds_per_epoch']:.1f} | {p['ratio']:.3f} | "
            f"{p['plain']['test_macro_f1']:.4f} | {p['bucketed']['test_macro_f1']:.4f} |"
        )
    print(
        f"| median | {median('plain', 'seconds_per_epoch'):.1f} | "
        f"{median('bucketed', 'seconds_per_epoch'):.1f} | {ratio:.3f} | "
        f"{median('plain', 'test_macro_f1'):.4f} | {median('bucketed', 'test_macro_f1'):.4f} |"
    )
    write_json(
        args.out,
        {
            "ratio": round(ratio, 4),
            "plain_seconds_per_epoch": median("plain", "seconds_per_epoch"),
            "bucketed_seconds_per_epoch": median("bucketed", "seconds_per_epoch"),
            "plain_test_macro_f1": median("plain", "test_macro_f1"),
            "bucketed_test_macro_f1": median("bucketed", "test_macro_f1"),
            "pairs": pairs,
            "corpus": args.corpus,
            "model": args.model,
            "epochs": args.epochs,
            "overrides": args.override,
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
