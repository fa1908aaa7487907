"""Load on the team tracking server (README, "Scaling out"): 8 jobs log their per-epoch metrics
to ``mlflow server`` on PostgreSQL at the same time, and it loses nothing: every run, and every
metric point of every epoch, exactly once. Once as a parallel sweep of real trainings, once as
fast as genre-exp's tracking code can send them (benchmarks/server_load.py, no training in
between). Needs the PostgreSQL that deploy/start-services.sh starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JOBS = 8
EPOCHS = 25
EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]


def test_eight_concurrent_jobs_lose_no_run_and_no_metric_point(
    tracking_server, tmp_path, kaggle_csv
):
    import mlflow

    result = run_cli(
        [
            *("-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={JOBS}"),
            *tiny_overrides(tmp_path, *kaggle_csv),
            f"training.seed={','.join(str(seed) for seed in range(1, JOBS + 1))}",
            *(f"training.epochs={EPOCHS}", "training.early_stopping.enabled=false"),
            # What loads the server is the logging; the data cache is not under test here.
            *("data.cache=false", "mlflow.log_model=false", "mlflow.experiment_name=load"),
        ],
        env={"MLFLOW_TRACKING_URI": tracking_server.url},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("load")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r != parent]
    assert sorted(int(c.data.params["training.seed"]) for c in children) == list(range(1, JOBS + 1))
    assert {c.info.status for c in children} == {"FINISHED"}
    assert parent.data.metrics["sweep_jobs"] == JOBS
    assert parent.data.metrics["sweep_failed"] == 0
    found = 0
    for child in children:
        for metric in EPOCH_METRICS:
            steps = [p.step for p in client.get_metric_history(child.info.run_id, metric)]
            assert sorted(steps) == list(range(EPOCHS)), (child.info.run_name, metric)
            found += len(steps)
    assert found == JOBS * EPOCHS * len(EPOCH_METRICS)


def test_eight_processes_logging_at_full_speed_lose_no_metric_point(tracking_server, tmp_path):
    """Each process logs its epochs with nothing in between, the worst case for the server;
    without genre-exp's client settings (one thread sending a job's metrics, not MLflow's ten)
    the server's database pool ran dry and answered some requests 400, which were lost."""
    benchmark = Path(__file__).resolve().parents[1] / "benchmarks" / "server_load.py"
    out = tmp_path / "server_load.json"
    done = subprocess.run(
        [
            *(sys.executable, str(benchmark), "--tracking-uri", tracking_server.url),
            *("--processes", str(JOBS), "--epochs", "50", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert result["runs_found"] == result["runs_finished"] == JOBS
    assert result["metric_points_found"] == JOBS * 50 * len(EPOCH_METRICS)
    assert result["metric_points_expected"] == result["metric_points_found"]


RACER = """
import sys, time
import mlflow, pandas as pd
from genre_exp.tracking import record, store

uri, experiment, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
# The racers create the experiment at the same moment too, as the product does (not
# mlflow.set_experiment, which leaves the losers of that race in the Default experiment).
experiment_id = store.connect(uri, experiment)
frame = pd.DataFrame({"lyrics": ["la la", "oh oh"], "genre": ["Pop", "Rock"]})
with mlflow.start_run(experiment_id=experiment_id):
    for k in range(rounds):
        dataset = mlflow.data.from_pandas(frame, source="x.csv", name=f"race-{k}", targets="genre")
        time.sleep(max(0.0, start + k - time.time()))
        record._log_input(dataset, "training")
"""


def test_jobs_logging_one_data_set_at_the_same_moment_all_log_it(tracking_server, tmp_path):
    """The jobs of a sweep log the same data set at nearly the same moment (they read it from
    one cache); on PostgreSQL, MLflow's look-up-then-insert of the data set lets the later of
    two inserts fail, and that job's run with it."""
    import time

    import mlflow

    processes, rounds = 6, 5
    start = time.time() + 25
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), tracking_server.url, "race", str(start), str(rounds)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    errors = [racer.communicate(timeout=300)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * processes, errors
    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == processes
    for run in runs:
        logged = sorted(d.dataset.name for d in run.inputs.dataset_inputs)
        assert logged == [f"race-{k}" for k in range(rounds)]
