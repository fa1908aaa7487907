"""Batch prediction speed of a logged genre-exp model: lyrics per second through MLflow's pyfunc
(``mlflow.pyfunc.load_model`` + ``predict`` on a DataFrame), and ``genre-exp predict`` end to
end on a CSV file.

The lyrics are the test split's, repeated to ``--rows`` rows. In process: one untimed warm-up
pass over all rows, then ``--passes`` timed passes; the rate is rows / the median pass. End to
end: ``genre-exp predict MODEL rows.csv -o out.csv`` in a fresh process (start-up, model load,
reading and writing included), its wall time and peak memory.

The model is ``--model-uri`` (a runs:/ or models:/ URI, or a run id), or, with ``--train``, a
model this script trains first with ``python -m genre_exp`` in a temporary store: the preset
``--experiment`` (default: ``best`` once conf/experiment/best.yaml exists) and any further
``--overrides``:

    python benchmarks/throughput.py --train --train-path DIR/train.parquet \
        --test-path DIR/test.parquet --corpus lyrics-real \
        --genres "Hip-Hop,Indie,Metal,Pop,Country,Jazz,Rock,R&B,Electronic"
    python benchmarks/throughput.py --train --experiment none --train-path DIR/train.parquet \
        --test-path DIR/test.parquet --corpus lyrics-real --genres "Hip-Hop,...,Electronic" \
        --overrides model=tfidf_linear "model.word_ngrams=[1,1]" "model.char_ngrams=[2,5]"
    python benchmarks/throughput.py --model-uri runs:/<run id>/model --test-path DIR/test.parquet \
        --corpus lyrics-real
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import sys
import tempfile
import time
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

# Lyrics per second the issue asks batch prediction to reach on 2 cores.
TARGET_PER_S = 8000
EXPERIMENT = "throughput"


def model_uri(value: str) -> str:
    """A run id stands for its logged model."""
    return f"runs:/{value}/model" if re.fullmatch(r"[0-9a-f]{32}", value) else value


def training_overrides(args: argparse.Namespace) -> list[str]:
    """``--experiment`` (``best`` if that preset exists, unless ``none``) and ``--overrides``."""
    from genre_exp.config import config_dir

    experiment = args.experiment
    if experiment is None and (config_dir() / "experiment" / "best.yaml").exists():
        experiment = "best"
    overrides = [f"experiment={experiment}"] if experiment not in (None, "none") else []
    overrides += args.overrides
    if not overrides:
        sys.exit(
            "throughput.py: --train: conf/experiment/best.yaml does not exist yet; "
            "expected --experiment NAME or --overrides"
        )
    return overrides


def train(args: argparse.Namespace, root: Path, env: dict[str, str]) -> tuple[str, str, dict]:
    """Train with ``training_overrides`` into ``root``'s store; the model's URI, the store and
    what training cost."""
    import mlflow

    if not (args.train_path and args.genres):
        sys.exit("throughput.py: --train needs --train-path and --genres")
    overrides = training_overrides(args)
    name = f"throughput/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    command = genre_exp(
        *data_overrides(args.train_path, args.test_path, args.genres),
        *overrides,
        f"paths.root_dir={root}",
        f"mlflow.experiment_name={EXPERIMENT}",
        f"mlflow.run_name={name}",
        "mlflow.log_model=true",
        "training.verbose=2",
    )
    print("$", " ".join(command), flush=True)
    log = root / "train.log"
    measured = measure(command, env, log)
    check(measured, "training", log)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs(
        [experiment.experiment_id], f"attributes.run_name = '{name}'", max_results=1
    )
    cost = {
        "overrides": overrides,
        "seconds": round(measured.seconds, 1),
        "max_rss_mb": round(measured.max_rss_mb),
        "test_macro_f1": run.data.metrics.get("test_macro_f1"),
        # What the preset resolved to when this ran (presets change).
        "model_params": {k: v for k, v in run.data.params.items() if k.startswith("model.")},
    }
    return f"runs:/{run.info.run_id}/model", uri, cost


def describe(uri: str, tracking_uri: str) -> dict:
    """Which run and model family the model comes from; an unknown one stops the script."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from genre_exp.errors import GenreExpError
    from genre_exp.tracking.store import require_store

    try:
        require_store(tracking_uri, f"--tracking-uri {tracking_uri}")
        info = mlflow.models.get_model_info(uri)
    except (GenreExpError, MlflowException, OSError) as exc:
        sys.exit(f"throughput.py: {uri}: {str(exc).splitlines()[0]}")
    tags = mlflow.MlflowClient(tracking_uri).get_run(info.run_id).data.tags if info.run_id else {}
    return {"run_id": info.run_id, "model": tags.get("model"), "family": tags.get("model_family")}


def in_process(uri: str, lyrics, passes: int) -> dict:
    """Load the pyfunc model, warm it up on every row, then time ``passes`` passes."""
    import mlflow
    import numpy as np

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model.predict(lyrics)
    warmup_seconds = time.perf_counter() - started
    seconds, cpu_seconds = [], []
    for _ in range(passes):
        started, cpu_started = time.perf_counter(), time.process_time()
        probabilities = model.predict(lyrics)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    # Other developers share the machine: what else ran while the passes were timed.
    load_average = os.getloadavg()
    assert probabilities.shape[0] == len(lyrics), probabilities.shape
    assert np.allclose(probabilities.to_numpy().sum(axis=1), 1, atol=1e-3)
    return {
        "predict_lyrics_per_s": round(len(lyrics) / statistics.median(seconds)),
        "pass_seconds": [round(s, 3) for s in seconds],
        # CPU time of all the process's threads: on a loaded machine, what the work costs
        # whatever share of the cores it got.
        "predict_lyrics_per_cpu_s": round(len(lyrics) / statistics.median(cpu_seconds)),
        "pass_cpu_seconds": [round(s, 3) for s in cpu_seconds],
        "warmup_seconds": round(warmup_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "predict_load_average": load_average,
        "genres": list(probabilities.columns),
    }


def end_to_end(uri: str, tracking_uri: str, csv: Path, rows: int, runs: int, env) -> dict:
    """``genre-exp predict`` on the CSV, ``runs`` times in fresh processes."""
    import pandas as pd

    results = []
    for k in range(runs):
        output, log = csv.with_name(f"predicted-{k}.csv"), csv.with_name(f"predict-{k}.log")
        command = [
            str(Path(sys.executable).with_name("genre-exp")),
            "predict",
            uri,
            str(csv),
            "-o",
            str(output),
            "--tracking-uri",
            tracking_uri,
        ]
        measured = measure(command, env, log)
        check(measured, "genre-exp predict", log)
        assert len(pd.read_csv(output)) == rows
        results.append(measured)
    seconds = statistics.median(m.seconds for m in results)
    return {
        "cli_seconds": round(seconds, 2),
        "cli_lyrics_per_s": round(rows / seconds),
        "cli_max_rss_mb": round(max(m.max_rss_mb for m in results)),
        "cli_runs_seconds": [round(m.seconds, 2) for m in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, required=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="runs:/<run id>/model, models:/..., or a run id")
    source.add_argument("--train", action="store_true", help="train the model first")
    parser.add_argument(
        "--experiment",
        help="with --train: the conf/experiment preset, or none (default: best, if it exists)",
    )
    parser.add_argument(
        "--overrides", nargs="+", default=[], help="with --train: further Hydra overrides"
    )
    parser.add_argument("--tracking-uri", help="the store of --model-uri (default: genre-exp's)")
    parser.add_argument("--rows", type=int, default=10000, help="(default: %(default)s)")
    parser.add_argument("--passes", type=int, default=5, help="timed passes (default: 5)")
    parser.add_argument("--cli-runs", type=int, default=1, help="genre-exp predict runs")
    parser.add_argument("--out", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args()

    # MLflow's download bars, one per artifact file, would bury the table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow
    import numpy as np
    import pandas as pd

    from genre_exp.config import tracking_uri
    from genre_exp.console import hide_native_logs
    from genre_exp.data.files import read_table

    hide_native_logs()  # TensorFlow's, as genre-exp predict does

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        root = Path(tmp)
        trained = None
        if args.train:
            uri, store, trained = train(args, root, env)
        else:
            uri, store = model_uri(args.model_uri), tracking_uri(args.tracking_uri)
        mlflow.set_tracking_uri(store)
        test = read_table(args.test_path)["lyrics"]
        lyrics = pd.DataFrame({"lyrics": np.resize(test.to_numpy(), args.rows)})
        csv = root / "lyrics.csv"
        lyrics.to_csv(csv, index=False)
        model = describe(uri, store)
        print(f"model {uri} ({model['model']}); {args.rows} rows", flush=True)
        predicted = in_process(uri, lyrics, args.passes)
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cli = end_to_end(uri, store, csv, args.rows, args.cli_runs, env)

    rate = predicted["predict_lyrics_per_s"]
    print(f"\n{os.cpu_count()} CPU cores; load average {os.getloadavg()}\n")
    print("| path | rows | lyrics/s | seconds (median) | peak memory |")
    print("|---|---|---|---|---|")
    print(
        f"| pyfunc predict, in process, warm | {args.rows} | {rate} "
        f"| {statistics.median(predicted['pass_seconds']):.2f} | {max_rss_mb:.0f} MB |"
    )
    print(
        f"| genre-exp predict CSV, end to end | {args.rows} | {cli['cli_lyrics_per_s']} "
        f"| {cli['cli_seconds']:.2f} | {cli['cli_max_rss_mb']} MB |"
    )
    print(
        f"\n{model['model']} ({model['family']}): {rate} lyrics/s "
        f"({'meets' if rate >= TARGET_PER_S else 'below'} the target of {TARGET_PER_S}); "
        f"{predicted['predict_lyrics_per_cpu_s']} lyrics per CPU second"
    )
    write_json(
        args.out,
        {
            **predicted,
            "target_lyrics_per_s": TARGET_PER_S,
            "meets_target": rate >= TARGET_PER_S,
            "max_rss_mb": round(max_rss_mb),
            **cli,
            "rows": args.rows,
            "passes": args.passes,
            # With --train, of a temporary store that is gone now.
            "model_uri": uri,
            **model,
            "trained": trained,
            "corpus": args.corpus,
            "test_path": args.test_path,
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
