"""A team tracking server, for real (README, "Scaling out"): ``mlflow server`` on PostgreSQL with
proxied artifacts, used by a training run, a parallel sweep, ``compare``, ``promote``, and
``predict`` from another folder that sees neither the training folder nor the server's artifact
folder, as from another machine. Needs the PostgreSQL that deploy/start-services.sh starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE_GENRES, run_cli, tiny_overrides, write_kaggle_csv

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODEL = "genres-team"
PROXIED = "mlflow-artifacts:/"


def client(server):
    import mlflow

    return mlflow.MlflowClient(server.url)


def on(server) -> dict:
    return {"MLFLOW_TRACKING_URI": server.url}


def experiment_runs(server, name: str):
    c = client(server)
    experiment = c.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name!r} on the server"
    return c.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def workplace(tmp_path_factory) -> Path:
    """The training folder: data, Hydra's outputs; MLflow lives on the server."""
    root = tmp_path_factory.mktemp("team-train")
    write_kaggle_csv(root)
    return root


def training(root: Path, experiment: str) -> list[str]:
    return [
        *tiny_overrides(root, root / "train.csv", root / "test.csv"),
        f"mlflow.experiment_name={experiment}",
    ]


@pytest.fixture(scope="module")
def trained(tracking_server, workplace):
    result = run_cli(
        [*training(workplace, "team-run"), "mlflow.run_name=solo"],
        env=on(tracking_server),
        cwd=workplace,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = experiment_runs(tracking_server, "team-run")
    return run


@pytest.fixture(scope="module")
def sweep(tracking_server, workplace):
    """Four jobs, two at a time, each logging its run and model to the server."""
    result = run_cli(
        [
            *("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
            "model.dropout=0.0,0.1,0.2,0.3",
            *training(workplace, "team-sweep"),
            "training.epochs=1",
        ],
        env=on(tracking_server),
        cwd=workplace,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = experiment_runs(tracking_server, "team-sweep")
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    return parents, [r for r in runs if r not in parents]


def test_a_training_run_logs_everything_through_the_server(tracking_server, workplace, trained):
    assert trained.info.status == "FINISHED"
    assert 0 <= trained.data.metrics["test_macro_f1"] <= 1
    assert trained.info.artifact_uri.startswith(PROXIED), trained.info.artifact_uri
    logged = client(tracking_server).search_logged_models([trained.info.experiment_id])
    assert [m.source_run_id for m in logged] == [trained.info.run_id]
    assert logged[0].artifact_location.startswith(PROXIED), logged[0].artifact_location
    # The artifacts are where the server keeps them, and the training folder holds no store.
    assert client(tracking_server).list_artifacts(trained.info.run_id)
    stored = [p for p in tracking_server.artifacts.rglob("*") if p.is_file()]
    assert any(trained.info.run_id in p.parts for p in stored)
    assert any(p.name == "MLmodel" for p in stored)
    assert not (workplace / "mlruns").exists()
    assert not (workplace / "mlflow.db").exists()


def test_a_parallel_sweep_loses_no_run_on_the_server(sweep):
    (parent,), children = sweep
    assert sorted(c.data.params["model.dropout"] for c in children) == ["0.0", "0.1", "0.2", "0.3"]
    errors = {c.info.run_name: c.data.tags.get("error") for c in children}
    assert {c.info.status for c in children} == {"FINISHED"}, errors
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_jobs"] == 4
    assert parent.data.metrics["sweep_failed"] == 0


def test_compare_reads_the_sweep_from_the_server(tracking_server, sweep, tmp_path):
    (parent,), children = sweep
    result = run_cli(
        [
            *("compare", "--experiment", "team-sweep", "--sweep", parent.info.run_id),
            *("--metric", "test_macro_f1", "--out", str(tmp_path)),
            *("--tracking-uri", tracking_server.url),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "compare.csv")
    scores = {c.info.run_id: c.data.metrics["test_macro_f1"] for c in children}
    assert sorted(table["run_id"]) == sorted(scores)
    np.testing.assert_allclose(
        table["test_macro_f1"], [scores[r] for r in table["run_id"]], atol=1e-4
    )
    assert table["test_macro_f1"].is_monotonic_decreasing


def hidden(paths: list[Path], command: list[str]) -> list[str]:
    """``command`` in a mount namespace of its own where each of ``paths`` is an empty folder:
    the files there are out of its reach, as on another machine; everyone else still sees
    them."""
    mount_each = 'while [ "$1" != -- ]; do mount -t tmpfs hidden "$1" || exit 97; shift; done'
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [
        *("unshare", "--mount", *user, "--", "sh", "-c", f'{mount_each}; shift; exec "$@"'),
        *("sh", *map(str, paths), "--", *command),
    ]


def test_the_champion_is_predicted_from_another_folder_through_the_server(
    tracking_server, workplace, sweep, tmp_path_factory
):
    (parent,), _ = sweep
    promoted = run_cli(
        [
            *("promote", "--experiment", "team-sweep", "--sweep", parent.info.run_id),
            *("--name", MODEL, "--tracking-uri", tracking_server.url),
        ]
    )
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    best = parent.data.tags["best_run_id"]
    assert f"models:/{MODEL}@champion -> version 1 (registered and promoted): run {best}" in (
        promoted.stdout
    )
    version = client(tracking_server).get_model_version_by_alias(MODEL, "champion")
    assert version.run_id == best
    (model,) = client(tracking_server).search_logged_models(
        [parent.info.experiment_id], filter_string=f"source_run_id = '{best}'"
    )
    assert model.artifact_location.startswith(PROXIED), model.artifact_location

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {**on(tracking_server), "GENRE_EXP_ROOT": str(elsewhere)}
    song = "metalword metalsound the night metalbeat"
    predict = [sys.executable, "-m", "genre_exp", "predict", f"models:/{MODEL}@champion"]
    predicted = subprocess.run(
        hidden([workplace, tracking_server.artifacts], [*predict, song, "-o", "out.csv"]),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=elsewhere,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    out = pd.read_csv(elsewhere / "out.csv")
    assert list(out.columns) == ["input", "genre", *KAGGLE_GENRES]
    assert out["input"].tolist() == [song]
    np.testing.assert_allclose(out[KAGGLE_GENRES].sum(axis=1), 1.0, rtol=1e-5)
    # Nothing of a store was made there: predict only read through the server.
    assert sorted(p.name for p in elsewhere.iterdir()) == ["out.csv"]


def test_a_stopped_server_fails_fast_and_a_restarted_one_has_every_run(
    tracking_server, workplace, trained, tmp_path
):
    tracking_server.stop()
    try:
        started = time.monotonic()
        down = run_cli(training(workplace, "team-run"), env=on(tracking_server))
        took = time.monotonic() - started
    finally:
        tracking_server.start()
    assert down.returncode == 1, down.stderr[-3000:]
    assert down.stderr.strip().count("\n") == 0, down.stderr
    assert f"mlflow.tracking_uri={tracking_server.url}: tracking server unreachable" in (
        down.stderr
    )
    assert took < 60
    # The same port, store and artifacts after the restart.
    again = client(tracking_server).get_run(trained.info.run_id)
    assert again.info.status == "FINISHED" and again.data.metrics == trained.data.metrics
    names = [a.path for a in client(tracking_server).list_artifacts(trained.info.run_id)]
    assert names
    fetched = client(tracking_server).download_artifacts(
        trained.info.run_id, names[0], str(tmp_path)
    )
    assert Path(fetched).exists()


# --- The server stopped in the middle of a run ---------------------------------------------------

EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]
CLIENT_SETTINGS = [
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE",
]


def test_mlflow_client_settings_default_to_genre_exps_and_keep_a_users_own(monkeypatch):
    from genre_exp.tracking import store

    for name in CLIENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    store.client_settings()
    assert {name: os.environ[name] for name in CLIENT_SETTINGS} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE": "1",
    }


class Training:
    """``genre-exp`` training in the background against the server, its stderr in a file."""

    def __init__(self, server, root: Path, experiment: str, *overrides: str, env=None):
        self.server, self.experiment = server, experiment
        self.log = root / f"{experiment}.err"
        full_env = {k: v for k, v in os.environ.items() if k not in CLIENT_SETTINGS}
        full_env |= {**on(server), **(env or {})}
        with open(self.log, "w") as stderr:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "genre_exp"),
                    *training(root, experiment),
                    *("training.early_stopping.enabled=false", "mlflow.log_model=false"),
                    *overrides,
                ],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def run_after(self, epochs: int, timeout: float = 300) -> str:
        """The run's id, once it has logged ``epochs`` epochs."""
        tracking = client(self.server)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.stderr()[-3000:]
            experiment = tracking.get_experiment_by_name(self.experiment)
            found = experiment and tracking.search_runs([experiment.experiment_id])
            if found and len(tracking.get_metric_history(found[0].info.run_id, "loss")) >= epochs:
                return found[0].info.run_id
            assert time.monotonic() < deadline, f"no {epochs} epochs logged in {timeout:.0f} s"
            time.sleep(0.5)

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process.kill()

    def stderr(self) -> str:
        return self.log.read_text()


def test_a_server_restarted_during_a_run_loses_none_of_its_epochs(tracking_server, workplace):
    job = Training(tracking_server, workplace, "team-restart", "training.epochs=30")
    run_id = job.run_after(epochs=3)
    tracking_server.stop()
    try:
        time.sleep(5)
    finally:
        tracking_server.start()
    assert job.wait() == 0, job.stderr()[-3000:]
    run = client(tracking_server).get_run(run_id)
    assert run.info.status == "FINISHED"
    for metric in EPOCH_METRICS:
        history = client(tracking_server).get_metric_history(run_id, metric)
        assert sorted(point.step for point in history) == list(range(30)), metric
    assert "test_macro_f1" in run.data.metrics


def test_a_server_that_stays_down_stops_the_job_in_one_line_and_its_run_is_resumed(
    tracking_server, workplace
):
    # The user's own retry settings win over genre-exp's (which wait about 2 minutes per
    # request): the job gives up in seconds.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    job = Training(tracking_server, workplace, "team-down", "training.epochs=20", env=quick)
    run_id = job.run_after(epochs=3)
    tracking_server.stop()
    try:
        started = time.monotonic()
        returncode = job.wait()
        took = time.monotonic() - started
    finally:
        tracking_server.start()
    stderr = job.stderr()
    assert returncode == 1, stderr[-3000:]
    assert took < 100, f"the job ended {took:.0f} s after the server stopped"
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert f"mlflow.tracking_uri={tracking_server.url}: tracking server unreachable" in last
    assert f"during run {run_id}; it stays RUNNING there" in last
    assert f"training.resume={run_id} continues it" in last
    assert stderr.count("tracking server unreachable") == 1, stderr[-3000:]

    # The job could not close its run; once the server is back, the next look at the
    # experiment marks it FAILED (its process is gone)...
    assert client(tracking_server).get_run(run_id).info.status == "RUNNING"
    reaped = run_cli(
        ["runs", "--reap", "--experiment", "team-down", "--tracking-uri", tracking_server.url]
    )
    assert reaped.returncode == 0, reaped.stderr[-3000:]
    failed = client(tracking_server).get_run(run_id)
    assert failed.info.status == "FAILED"
    assert "ended without closing its run" in failed.data.tags["error"]

    # ... and its checkpoint carries it on, in the same run.
    resumed = run_cli(
        [
            *training(workplace, "team-down"),
            *("training.early_stopping.enabled=false", "mlflow.log_model=false"),
            *("training.epochs=22", f"training.resume={run_id}"),
        ],
        env=on(tracking_server),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = experiment_runs(tracking_server, "team-down")
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    assert "error" not in run.data.tags
    assert run.data.metrics["epochs_trained"] == 22
    steps = {p.step for p in client(tracking_server).get_metric_history(run_id, "loss")}
    assert {0, 1, 2, 20, 21} <= steps
