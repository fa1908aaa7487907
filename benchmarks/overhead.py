"""What genre-exp's framework costs: a run of ``python -m genre_exp`` (Hydra, MLflow logging,
checkpoints, figures, the logged model) against a bare Keras script doing the same work.

Both train the same LSTM (``model=lstm``: Embedding(128, masked) -> LSTM(128) -> softmax) on
the same rows (``data=balanced``: every genre undersampled to the smallest, then a stratified
20 % validation split, both seeded alike), with ``TextVectorization`` adapted once on the
training part (genre-exp's cache of cleaned data and token ids off), the same epochs (no early
stopping), batch size and validation data, then predict the test split. Each run is a fresh
process; runs are interleaved in pairs (the order alternating) after one untimed warm-up each,
so a busy spell on a shared machine slows both alike. Reports each pair's time ratio, the
median ratio, CPU times and each run's peak memory.

Given two or more epoch counts (``--epochs 4 16``), the pairs are run at each, the headline
ratio is the first count's, and a line through each side's median times splits genre-exp's
cost into what it pays once a run (start-up, figures, the logged model) and what it pays an
epoch (the validation macro-F1, the checkpoint, the logged metrics).

    python benchmarks/overhead.py --train-path DIR/train.parquet --test-path DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --pairs 3 --epochs 4 16 --out benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
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

# The framework's cost the issue asks to stay under: genre-exp's time / the bare script's.
TARGET_RATIO = 1.05
SEED = 42


def bare_keras(args: argparse.Namespace) -> None:
    """The script a user would write without genre-exp. Prints its row counts and scores."""
    import keras
    import pandas as pd
    import tensorflow as tf
    from keras import layers
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    genres = args.genres.split(",")
    keras.utils.set_random_seed(SEED)
    train, test = pd.read_parquet(args.train_path), pd.read_parquet(args.test_path)
    smallest = train["genre"].value_counts().min()
    balanced = pd.concat(
        train[train["genre"] == g].sample(n=smallest, random_state=SEED) for g in genres
    ).sample(frac=1.0, random_state=SEED)
    fit, val = train_test_split(
        balanced, test_size=0.2, stratify=balanced["genre"], random_state=SEED
    )
    vectorizer = layers.TextVectorization(
        max_tokens=args.vocab_size, output_sequence_length=args.sequence_length
    )
    vectorizer.adapt(tf.constant(fit["lyrics"].tolist()))

    def ids(frame):
        return vectorizer(tf.constant(frame["lyrics"].tolist())).numpy()

    def codes(frame):
        return frame["genre"].map({g: i for i, g in enumerate(genres)}).to_numpy()

    model = keras.Sequential(
        [
            keras.Input((args.sequence_length,), dtype="int32"),
            layers.Embedding(vectorizer.vocabulary_size(), 128, mask_zero=True),
            layers.LSTM(128),
            layers.Dense(len(genres), activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        ids(fit),
        codes(fit),
        validation_data=(ids(val), codes(val)),
        epochs=args.epochs[0],  # the bare side is given one count
        batch_size=args.batch_size,
        verbose=2,
    )
    predicted = model.predict(ids(test), batch_size=256, verbose=0).argmax(axis=1)
    scores = {
        "train_rows": len(fit),
        "val_rows": len(val),
        "test_accuracy": accuracy_score(codes(test), predicted),
        "test_macro_f1": f1_score(codes(test), predicted, average="macro"),
    }
    print("BARE_RESULT " + json.dumps(scores))


def bare_command(args: argparse.Namespace, epochs: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--bare",
        *("--train-path", args.train_path, "--test-path", args.test_path),
        *("--genres", args.genres, "--corpus", args.corpus),
        *("--epochs", str(epochs), "--batch-size", str(args.batch_size)),
        *("--sequence-length", str(args.sequence_length), "--vocab-size", str(args.vocab_size)),
    ]


def genre_exp_command(args: argparse.Namespace, epochs: int, root: Path, name: str) -> list[str]:
    return genre_exp(
        "data=balanced",
        *data_overrides(args.train_path, args.test_path, args.genres),
        f"data.sequence_length={args.sequence_length}",
        f"data.vocab_size={args.vocab_size}",
        f"data.seed={SEED}",
        # The bare script reads and vectorises every time; so must genre-exp, not reuse the
        # cleaned data and token ids of the run before.
        "data.cache=false",
        "model=lstm",
        f"training.epochs={epochs}",
        f"training.batch_size={args.batch_size}",
        f"training.seed={SEED}",
        "training.early_stopping.enabled=false",
        "training.verbose=2",
        f"paths.root_dir={root}",
        "mlflow.experiment_name=overhead",
        f"mlflow.run_name={name}",
    )


def bare_result(log: Path) -> dict:
    line = next(x for x in log.read_text().splitlines() if x.startswith("BARE_RESULT "))
    return json.loads(line.removeprefix("BARE_RESULT "))


def genre_exp_result(root: Path, name: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("overhead")
    (run,) = client.search_runs(
        [experiment.experiment_id], f"attributes.run_name = '{name}'", max_results=1
    )
    metrics = run.data.metrics
    return {
        "train_rows": int(metrics["data_train_rows"]),
        "val_rows": int(metrics["data_val_rows"]),
        "test_accuracy": metrics["test_accuracy"],
        "test_macro_f1": metrics["test_macro_f1"],
        "epochs_trained": int(metrics["epochs_trained"]),
        "logged_model": bool(
            client.search_logged_models(
                [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
            )
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--pairs", type=int, default=3, help="timed pairs (default: 3)")
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[4],
        help="epochs per run; several counts split the cost into fixed and per-epoch parts "
        "(default: 4)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="(default: 100)")
    parser.add_argument("--sequence-length", type=int, default=500, help="(default: 500)")
    parser.add_argument("--vocab-size", type=int, default=20000, help="(default: 20000)")
    parser.add_argument("--out", default=str(RESULTS / "overhead.json"))
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_keras(args)
        return

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        root, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        # Untimed: warms the file cache for both and creates genre-exp's store, which a user
        # has from the first run on.
        for what, command in (
            ("bare", bare_command(args, 1)),
            ("genre-exp", genre_exp_command(args, 1, root, "warm-up")),
        ):
            print(f"warm-up: {what}", flush=True)
            log = logs / f"warm-up-{what}.log"
            check(measure(command, env, log), f"warm-up of {what}", log)
        pairs = []
        for k, epochs in enumerate(e for e in args.epochs for _ in range(args.pairs)):
            name = f"pair-{k}"
            runs = {
                "bare": (bare_command(args, epochs), logs / f"{name}-bare.log"),
                "genre_exp": (
                    genre_exp_command(args, epochs, root, name),
                    logs / f"{name}-genre-exp.log",
                ),
            }
            order = list(runs) if k % 2 == 0 else list(reversed(runs))
            measured = {}
            for side in order:
                command, log = runs[side]
                measured[side] = measure(command, env, log)
                check(measured[side], f"{side} run of pair {k}", log)
            pair = {
                side: {
                    "seconds": round(m.seconds, 2),
                    "cpu_seconds": round(m.cpu_seconds, 2),
                    "max_rss_mb": round(m.max_rss_mb),
                }
                for side, m in measured.items()
            }
            pair["order"] = order
            pair["epochs"] = epochs
            pair["ratio"] = round(measured["genre_exp"].seconds / measured["bare"].seconds, 4)
            pair["cpu_ratio"] = round(
                measured["genre_exp"].cpu_seconds / measured["bare"].cpu_seconds, 4
            )
            pair["bare"] |= bare_result(runs["bare"][1])
            pair["genre_exp"] |= genre_exp_result(root, name)
            pairs.append(pair)
            print(
                f"pair {k} ({epochs} epochs): bare {pair['bare']['seconds']:.1f} s, genre-exp "
                f"{pair['genre_exp']['seconds']:.1f} s, ratio {pair['ratio']:.3f}",
                flush=True,
            )
    report(args, pairs)


def median_of(pairs: list[dict], side: str, key: str) -> float:
    return statistics.median(p[side][key] for p in pairs)


def fixed_and_per_epoch(by_epochs: dict[int, list[dict]], side: str, key: str) -> tuple:
    """The least-squares line through a side's median times against epochs: (seconds once a
    run, seconds an epoch)."""
    points = [(e, median_of(ps, side, key)) for e, ps in by_epochs.items()]
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    return intercept, slope


def cost_split(by_epochs: dict[int, list[dict]]) -> dict | None:
    if len(by_epochs) < 2:
        return None
    split = {}
    for key in ("seconds", "cpu_seconds"):
        bare_fixed, bare_epoch = fixed_and_per_epoch(by_epochs, "bare", key)
        ours_fixed, ours_epoch = fixed_and_per_epoch(by_epochs, "genre_exp", key)
        split[key] = {
            "bare_fixed": round(bare_fixed, 2),
            "bare_per_epoch": round(bare_epoch, 2),
            "genre_exp_fixed": round(ours_fixed, 2),
            "genre_exp_per_epoch": round(ours_epoch, 2),
            "extra_fixed": round(ours_fixed - bare_fixed, 2),
            "per_epoch_ratio": round(ours_epoch / bare_epoch, 4),
        }
    return split


def report(args: argparse.Namespace, all_pairs: list[dict]) -> None:
    by_epochs = {e: [p for p in all_pairs if p["epochs"] == e] for e in args.epochs}
    # The headline figures are the first epoch count's, as with a single count.
    pairs = by_epochs[args.epochs[0]]
    ratio = statistics.median(p["ratio"] for p in pairs)
    cpu_ratio = statistics.median(p["cpu_ratio"] for p in pairs)
    same_rows = all(
        p["bare"][k] == p["genre_exp"][k] for p in all_pairs for k in ("train_rows", "val_rows")
    )
    split = cost_split(by_epochs)
    print(
        f"\n{len(pairs)} pairs at {args.epochs[0]} epochs; {os.cpu_count()} CPU cores; "
        f"load average {os.getloadavg()}\n"
    )
    print("| run | wall time (median) | CPU time (median) | peak memory (median) | test macro-F1 |")
    print("|---|---|---|---|---|")
    for side, label in (("bare", "bare Keras script"), ("genre_exp", "python -m genre_exp")):
        f1 = ", ".join(f"{p[side]['test_macro_f1']:.3f}" for p in pairs)
        print(
            f"| {label} | {median_of(pairs, side, 'seconds'):.1f} s "
            f"| {median_of(pairs, side, 'cpu_seconds'):.1f} s "
            f"| {median_of(pairs, side, 'max_rss_mb'):.0f} MB | {f1} |"
        )
    each = ", ".join(f"{p['ratio']:.3f}" for p in pairs)
    print(
        f"\nratio genre-exp / bare: median {ratio:.3f} (pairs: {each}; target <= "
        f"{TARGET_RATIO}); CPU-time ratio {cpu_ratio:.3f}; same training and validation rows: "
        f"{same_rows}"
    )
    for e in args.epochs[1:]:
        each = ", ".join(f"{p['ratio']:.3f}" for p in by_epochs[e])
        median = statistics.median(p["ratio"] for p in by_epochs[e])
        print(f"at {e} epochs: median {median:.3f} (pairs: {each})")
    if split:
        wall, cpu = split["seconds"], split["cpu_seconds"]
        print(
            f"genre-exp's extra cost: {wall['extra_fixed']:.1f} s once a run "
            f"({cpu['extra_fixed']:.1f} s CPU), then {wall['per_epoch_ratio']:.3f} of the bare "
            f"script's time an epoch ({wall['genre_exp_per_epoch']:.1f} s vs "
            f"{wall['bare_per_epoch']:.1f} s; CPU {cpu['per_epoch_ratio']:.3f})"
        )
    write_json(
        args.out,
        {
            "ratio": round(ratio, 4),
            "target_ratio": TARGET_RATIO,
            "cpu_ratio": round(cpu_ratio, 4),
            "bare_seconds": median_of(pairs, "bare", "seconds"),
            "genre_exp_seconds": median_of(pairs, "genre_exp", "seconds"),
            "bare_max_rss_mb": median_of(pairs, "bare", "max_rss_mb"),
            "genre_exp_max_rss_mb": median_of(pairs, "genre_exp", "max_rss_mb"),
            "same_rows": same_rows,
            "ratio_by_epochs": {
                str(e): round(statistics.median(p["ratio"] for p in ps), 4)
                for e, ps in by_epochs.items()
            },
            "cost_split": split,
            "pairs": all_pairs,
            "corpus": args.corpus,
            "train_path": args.train_path,
            "test_path": args.test_path,
            "genres": args.genres,
            "settings": {
                "model": "lstm",
                "data": "balanced",
                "epochs": args.epochs[0],
                "epoch_counts": args.epochs,
                "batch_size": args.batch_size,
                "sequence_length": args.sequence_length,
                "vocab_size": args.vocab_size,
                "seed": SEED,
                "early_stopping": False,
                "data_cache": False,
            },
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
