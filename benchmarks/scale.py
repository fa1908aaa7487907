"""What more training rows cost the default LSTM (``model=lstm``, ``data=unbalanced``): data
load, vectorisation and one epoch at 10k, 30k, 100k and 300k rows (Kaggle's training split has
about 290k), seconds per phase and peak memory.

The rows are the given training split resampled with replacement to each size, every copy's
words rotated by a random offset (genre-exp drops duplicate lyrics, and a rotation keeps the
words and the length of the song), written as a temporary Parquet file in Kaggle's layout
(Artist, Song, Genre, Language, Lyrics); the test split is used as it is. Each size runs in a
fresh process through genre-exp's own code: the composed config, ``pipeline.load_data``
(cache off), ``TextVectorization`` adapted and applied, the model built, ``train.fit`` for one
epoch (validation macro-F1 included).

Within ``--epoch-budget`` seconds an epoch's training batches are measured; a longer epoch is
stopped there and its remaining batches extrapolated from the measured ones (marked
``extrapolated``). A size that would not end within ``--max-minutes`` in all is not run: its
numbers are extrapolated from the two largest sizes measured (see ``extrapolate``), also marked.
A size is the training file's rows; 20 % of them go to validation.

    python benchmarks/scale.py --train-path DIR/train.parquet --test-path DIR/test.parquet \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic" \
        --corpus lyrics-real --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import (
    RESULTS,
    add_data_arguments,
    check,
    data_overrides,
    machine,
    measure,
    write_json,
)

PHASES = ("imports", "load", "adapt", "vectorise", "build", "train", "validation")
# Phases whose cost does not depend on the number of rows.
FIXED_PHASES = ("imports", "build")
SEED = 42


def resample(train_path: str, rows: int, seed: int = SEED):
    """``rows`` distinct songs drawn with replacement from the split, in Kaggle's layout."""
    import numpy as np
    import pandas as pd

    source = pd.read_parquet(train_path)
    words = source["lyrics"].str.split().tolist()
    rng = np.random.default_rng(seed)
    # Each song's text -> the row it was drawn from; a repeated draw is drawn again.
    texts: dict[str, int] = {}
    while len(texts) < rows:
        for pick in rng.integers(0, len(source), size=rows - len(texts)):
            song, shift = words[pick], int(rng.integers(0, len(words[pick])))
            texts.setdefault(" ".join(song[shift:] + song[:shift]), int(pick))
    lyrics = list(texts)
    picked = np.array(list(texts.values()))
    return pd.DataFrame(
        {
            "Artist": source["artist"].to_numpy()[picked],
            "Song": [f"copy {k}" for k in range(rows)],
            "Genre": source["genre"].to_numpy()[picked],
            "Language": "",
            "Lyrics": lyrics,
        }
    )


def child(args: argparse.Namespace) -> None:
    """One size, in this process: each phase's seconds and the peak memory after it."""
    phases: dict[str, dict] = {}
    clock = [time.perf_counter()]

    def done(phase: str, **extra) -> None:
        now = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        phases[phase] = {"seconds": round(now - clock[0], 2), "peak_mb": round(peak), **extra}
        clock[0] = now

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genre_exp import pipeline, train, vectorize
    from genre_exp.config import config_dir
    from genre_exp.models import Inputs, build_classifier

    # genre-exp imports TensorFlow where it first needs it; here its start-up counts as imports.
    importlib.import_module("tensorflow")
    done("imports")
    with tempfile.TemporaryDirectory(prefix="scale-root-") as root:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(
                "config",
                overrides=[
                    *data_overrides(args.train_path, args.test_path, args.genres),
                    f"paths.root_dir={root}",
                    "data.cache=false",
                    "training.epochs=1",
                    "training.verbose=2",
                    *args.override,
                ],
            )
        clock[0] = time.perf_counter()  # composing is start-up, not data work
        dataset = pipeline.load_data(cfg, pipeline.locate_data(cfg))
        done("load", train_rows=len(dataset.train), val_rows=len(dataset.val))
        data = cfg.data
        vectorizer = vectorize.build_vectorizer(
            dataset.texts("train"), data.vocab_size, data.sequence_length, str(data.standardize)
        )
        done("adapt")
        splits = vectorize.vectorise_splits(vectorizer, dataset)
        done("vectorise")
        train.seed_everything(cfg.training.seed)
        classifier = build_classifier(
            cfg.model, Inputs(vectorizer.vocabulary_size(), data.sequence_length, len(data.genres))
        )
        done("build")
        timer = epoch_timer(args.epoch_budget)
        train.fit(
            classifier,
            splits.ids["train"],
            dataset.codes("train"),
            splits.ids["val"],
            dataset.codes("val"),
            len(dataset.genres),
            cfg.training,
            extra_callbacks=[timer],
        )
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    batches = math.ceil(len(dataset.train) / cfg.training.batch_size)
    phases["train"] = timer.train_phase(batches) | {"peak_mb": peak}
    phases["validation"] = {"seconds": round(timer.validation_seconds, 2), "peak_mb": peak}
    print("SCALE_RESULT " + json.dumps(phases), flush=True)


def epoch_timer(budget: float):
    """A Keras callback timing one epoch's batches and its validation, stopping the epoch once
    ``budget`` seconds are spent. Listed after train.fit's own callbacks, so its epoch end
    comes after the validation scores."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        batches = 0

        def on_train_begin(self, logs=None) -> None:
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.batches += 1
            self.last = time.perf_counter()
            if self.batches == 1:
                self.first = self.last
            # The first batch builds the graph: a rate needs two more after it.
            if self.batches >= 3 and self.last - self.begin > budget:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.validation_seconds = time.perf_counter() - self.last

        def train_phase(self, total: int) -> dict:
            """The epoch's training seconds: measured, or the first batch (which builds the
            graph) plus the others at the measured rate."""
            measured = self.last - self.begin
            extrapolated = self.batches < total
            if extrapolated:
                rate = (self.last - self.first) / max(1, self.batches - 1)
                seconds = (self.first - self.begin) + rate * (total - 1)
            else:
                seconds = measured
            return {
                "seconds": round(seconds, 2),
                "extrapolated": extrapolated,
                "batches_measured": self.batches,
                "batches": total,
                "measured_seconds": round(measured, 2),
                "first_batch_seconds": round(self.first - self.begin, 3),
                "batch_seconds": round((self.last - self.first) / max(1, self.batches - 1), 4),
            }

    return EpochTimer()


def extrapolate(measured: list[dict], rows: int) -> dict:
    """A size's numbers from the two largest measured sizes, marked as such. Start-up and
    building the model cost the same at any size; an epoch is its first batch plus the other
    batches at the largest size's rate; the other data phases, and the memory above what
    start-up takes, grow on the line through the two sizes (with one, in proportion to the
    rows; a line falling with more rows is noise, and taken as flat). Memory needs two sizes:
    at one, most of it is TensorFlow's, which does not grow with the rows."""
    points = sorted(measured, key=lambda r: r["rows"])[-2:]
    last = points[-1]

    def grown(get) -> float:
        if len(points) == 1:
            return get(last) * rows / last["rows"]
        (x0, y0), (x1, y1) = [(p["rows"], get(p)) for p in points]
        return y1 + max(0.0, (y1 - y0) / (x1 - x0)) * (rows - x1)

    def seconds(phase: str) -> float:
        if phase in FIXED_PHASES:
            return last["phases"][phase]["seconds"]
        if phase == "train":
            # The first batch builds the graph; the others take the largest size's rate.
            epoch = last["phases"]["train"]
            batches = epoch["batches"] * rows / last["rows"]
            return epoch["first_batch_seconds"] + epoch["batch_seconds"] * (batches - 1)
        return grown(lambda p: p["phases"][phase]["seconds"])

    phases = {
        phase: {"seconds": round(seconds(phase), 1), "extrapolated": True} for phase in PHASES
    }
    # Interpreter start, composing the config and exit: the process's time outside the phases.
    outside = last["seconds"] - sum(last["phases"][f]["seconds"] for f in PHASES)
    start_up_mb = last["phases"]["imports"]["peak_mb"]
    return {
        "rows": rows,
        "extrapolated": True,
        "extrapolated_from_rows": [p["rows"] for p in points],
        "phases": phases,
        "seconds": round(outside + sum(p["seconds"] for p in phases.values()), 1),
        "max_rss_mb": round(start_up_mb + grown(lambda p: p["max_rss_mb"] - start_up_mb))
        if len(points) > 1
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--sizes", default="10000,30000,100000,300000", help="training rows (default: %(default)s)"
    )
    parser.add_argument(
        "--epoch-budget",
        type=float,
        default=300,
        help="seconds of an epoch's training measured before the rest is extrapolated "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=30,
        help="sizes that would end later are extrapolated, not run (default: %(default)s)",
    )
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every size")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    deadline = time.monotonic() + args.max_minutes * 60
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for rows in sorted(int(s) for s in args.sizes.split(",")):
            measured = [r for r in results if "extrapolated_from_rows" not in r]
            if measured:
                guess = extrapolate(measured, rows)
                epoch = guess["phases"]["train"]["seconds"]
                # The epoch's training part stops at the budget, however long the whole epoch.
                expected = guess["seconds"] - epoch + min(epoch, args.epoch_budget)
                if time.monotonic() + expected > deadline:
                    print(
                        f"{rows} rows: about {expected / 60:.0f} min, past --max-minutes; "
                        "extrapolated",
                        flush=True,
                    )
                    results.append(guess)
                    continue
            results.append(run_size(args, rows, Path(tmp), env))
    report(args, results)


def run_size(args: argparse.Namespace, rows: int, tmp: Path, env: dict) -> dict:
    train_file = tmp / f"train-{rows}.parquet"
    resample(args.train_path, rows).to_parquet(train_file)
    command = [
        sys.executable,
        __file__,
        "--child",
        *("--train-path", str(train_file), "--test-path", args.test_path),
        *("--genres", args.genres, "--corpus", args.corpus),
        *("--epoch-budget", str(args.epoch_budget)),
        *args.override,
    ]
    log = tmp / f"scale-{rows}.log"
    print(f"{rows} rows ...", flush=True)
    measured = measure(command, env, log)
    check(measured, f"the {rows}-row run", log)
    line = next(x for x in log.read_text().splitlines() if x.startswith("SCALE_RESULT "))
    phases = json.loads(line.removeprefix("SCALE_RESULT "))
    epoch = phases["train"]
    result = {
        "rows": rows,
        "file_mb": round(train_file.stat().st_size / 2**20, 1),
        "phases": phases,
        # The process's wall time, from interpreter start to exit, with the whole epoch.
        "seconds": round(measured.seconds + epoch["seconds"] - epoch["measured_seconds"], 1),
        "measured_seconds": round(measured.seconds, 1),
        "max_rss_mb": round(measured.max_rss_mb),
        "extrapolated": epoch["extrapolated"],
    }
    train_file.unlink()
    print(
        f"{rows} rows: {result['seconds']:.0f} s, peak {result['max_rss_mb']} MB"
        + (" (epoch extrapolated)" if result["extrapolated"] else ""),
        flush=True,
    )
    return result


def report(args: argparse.Namespace, results: list[dict]) -> None:
    print(f"\n{os.cpu_count()} CPU cores; load average {os.getloadavg()}; * = extrapolated\n")
    print("| training file rows | " + " | ".join(PHASES) + " | whole process | peak memory |")
    print("|---" * (len(PHASES) + 3) + "|")
    for r in results:
        cells = []
        for phase in PHASES:
            entry = r["phases"][phase]
            cells.append(f"{entry['seconds']:.1f} s" + ("*" if entry.get("extrapolated") else ""))
        whole = "*" if r["extrapolated"] else ""
        if r["max_rss_mb"] is None:
            memory = "? (one size measured)"
        else:
            memory = f"{r['max_rss_mb']:,} MB" + ("*" if r.get("extrapolated_from_rows") else "")
        print(
            f"| {r['rows']:,} | " + " | ".join(cells) + f" | {r['seconds']:.0f} s{whole} "
            f"| {memory} |"
        )
    write_json(
        args.out,
        {
            "results": results,
            "model": "lstm",
            "data": "unbalanced",
            "overrides": args.override,
            "phases": list(PHASES),
            "epoch_budget_seconds": args.epoch_budget,
            "max_minutes": args.max_minutes,
            "corpus": args.corpus,
            "train_path": args.train_path,
            "test_path": args.test_path,
            "genres": args.genres,
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
