"""Sweeps: Optuna search that resumes, parallel jobs on one SQLite store, the submitit launcher,
and failing jobs that leave the sweep going."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides, tracking_uri

pytestmark = pytest.mark.slow


def sweep_runs(root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    return parents, [r for r in runs if r not in parents]


def quick(root: Path, train: Path, test: Path) -> list[str]:
    return [*tiny_overrides(root, train, test), "training.epochs=1", "mlflow.log_model=false"]


def trial_states(storage: Path, study: str) -> list[str]:
    """The study's trial states in order, read without writing (the sweep owns the file)."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{storage}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "select t.state from trials t join studies s on s.study_id = t.study_id "
                "where s.study_name = ? order by t.number",
                (study,),
            ).fetchall()
    except sqlite3.Error:  # not created yet
        return []
    return [state for (state,) in rows]


def test_optuna_search_resumes_where_it_stopped(tmp_path, kaggle_csv):
    import re
    import signal

    import optuna
    from conftest import interrupt_when

    storage = tmp_path / "mlruns" / "optuna.db"
    args = [
        "-m",
        "hparams_search=lstm_optuna",
        *quick(tmp_path, *kaggle_csv),
        "hydra.sweeper.study_name=resume-test",
        "hydra.sweeper.n_trials=3",
        # The killed trial is failed once it has had no heartbeat for 2 s: before the rerun
        # starts its first trial.
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=2",
    ]

    def second_trial_training() -> bool:
        states = trial_states(storage, "resume-test")
        if states not in ([], ["RUNNING"], ["COMPLETE"], ["COMPLETE", "RUNNING"]):
            pytest.fail(f"trial states {states}: the second trial ended before it was killed")
        # Its first epoch done: its MLflow run has its params and a checkpoint.
        trained = (tmp_path / "outputs" / "multirun").rglob("1/checkpoint/state.json")
        return states == ["COMPLETE", "RUNNING"] and any(trained)

    # Trials long enough to kill the second one while it trains.
    long = ["training.epochs=8", "training.early_stopping.enabled=false"]
    killed = interrupt_when([*args, *long], second_trial_training, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert trial_states(storage, "resume-test") == ["COMPLETE", "RUNNING"]

    second = run_cli(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(
        # Before or after the rerun's first trial, as the killed one's last heartbeat ages.
        r"trial 1 of study 'resume-test': no heartbeat for \d+ s \(its worker died\): "
        r"marked FAILED",
        second.stderr,
        re.DOTALL,
    ), second.stderr[-3000:]
    states = [
        t.state.name
        for t in optuna.load_study(study_name="resume-test", storage=f"sqlite:///{storage}").trials
    ]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]

    parents, children = sweep_runs(tmp_path)
    status = {p.info.status: p for p in parents}
    assert sorted(status) == ["FAILED", "FINISHED"]
    dead_parent, parent = status["FAILED"], status["FINISHED"]
    by_parent = {
        p.info.run_id: sorted(
            (c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id),
            key=lambda c: c.info.start_time,
        )
        for p in parents
    }
    interrupted = by_parent[dead_parent.info.run_id]
    assert [c.info.status for c in interrupted] == ["FINISHED", "FAILED"]
    assert [c.info.status for c in by_parent[parent.info.run_id]] == ["FINISHED", "FINISHED"]
    # The killed launcher's runs were closed by the resumed sweep, saying why.
    for run in (dead_parent, interrupted[1]):
        assert "ended without closing its run: its process" in run.data.tags["error"], run
        assert f"run {run.info.run_id} ({run.info.run_name}) marked FAILED" in second.stderr
    assert parent.data.metrics["sweep_jobs"] == 2
    # Each job's MLflow run carries the trial's sampled parameters.
    assert len({c.data.params["training.learning_rate"] for c in children}) == 4
    best = max(by_parent[parent.info.run_id], key=lambda c: c.data.metrics["final_val_macro_f1"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_final_val_macro_f1"] == pytest.approx(
        best.data.metrics["final_val_macro_f1"]
    )


def test_four_parallel_jobs_lose_no_run_and_a_failure_does_not_stop_them(tmp_path, kaggle_csv):
    result = run_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            "model.dropout=0.0,0.1,0.2,1.5",
            *quick(tmp_path, *kaggle_csv),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    assert "sweep: 1 of 4 jobs failed" in result.stderr
    (parent,), children = sweep_runs(tmp_path)
    assert sorted(c.data.params["model.dropout"] for c in children) == ["0.0", "0.1", "0.2", "1.5"]
    status = {c.data.params["model.dropout"]: c.info.status for c in children}
    assert status == {"0.0": "FINISHED", "0.1": "FINISHED", "0.2": "FINISHED", "1.5": "FAILED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.metrics["sweep_jobs"] == 4
    assert parent.data.metrics["sweep_failed"] == 1
    assert parent.info.status == "FINISHED"


def test_submitit_local_launcher_and_a_job_failing_before_its_run(tmp_path, kaggle_csv):
    train, test = kaggle_csv
    result = run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            *quick(tmp_path, train, test),
            f"data.train_path={train},{tmp_path / 'missing.csv'}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,), children = sweep_runs(tmp_path)
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "missing.csv: file not found" in failed.data.tags["error"]
    assert failed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.metrics["sweep_failed"] == 1


def test_interrupted_sweep_ends_its_parent_killed(tmp_path, kaggle_csv):
    import signal

    from conftest import interrupt_when

    args = [
        "-m",
        "model=lstm,lstm_dropout",
        *quick(tmp_path, *kaggle_csv),
        "training.epochs=100000",
        "training.early_stopping.enabled=false",
    ]

    def training() -> bool:
        logs = [p.read_text() for p in (tmp_path / "outputs").rglob("genre_exp.log")]
        return any("MLflow run" in text for text in logs)

    ended = interrupt_when(args, training, signal.SIGINT)
    assert ended.returncode == 130, ended.stderr[-2000:]
    (parent,), children = sweep_runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]
    assert "best_run_id" not in parent.data.tags
