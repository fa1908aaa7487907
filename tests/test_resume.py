"""A killed run continues from its last checkpoint in the same MLflow run (real CLI
subprocesses, real SQLite store, real Keras training)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import interrupt_when, run_cli, tiny_overrides, tracking_uri

pytestmark = pytest.mark.slow

EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]


def client_for(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


def runs_of(root: Path):
    client = client_for(root)
    found = client.get_experiment_by_name("tests")
    return [] if found is None else client.search_runs([found.experiment_id], max_results=100)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "[ERROR]" in line]


def kill_after_epochs(root: Path, overrides: list[str], epochs: int) -> None:
    """Train 'forever' and SIGTERM the job once its checkpoint holds ``epochs`` epochs."""

    def checkpointed() -> bool:
        states = list((root / "outputs").rglob("checkpoint/state.json"))
        return bool(states) and json.loads(states[0].read_text())["epoch"] >= epochs

    ended = interrupt_when([*overrides, "training.epochs=100000"], checkpointed)
    assert ended.returncode == 130, ended.stderr[-2000:]


def test_killed_run_resumes_in_the_same_run_and_finishes(tmp_path, kaggle_csv):
    overrides = [
        *tiny_overrides(tmp_path, *kaggle_csv),
        "training.early_stopping.enabled=false",
        "mlflow.log_model=false",
    ]
    kill_after_epochs(tmp_path, overrides, epochs=2)
    (killed,) = runs_of(tmp_path)
    assert killed.info.status == "KILLED"
    client = client_for(tmp_path)
    done = len(client.get_metric_history(killed.info.run_id, "loss"))
    state_file = next((tmp_path / "outputs").rglob("checkpoint/state.json"))
    checkpointed = json.loads(state_file.read_text())["epoch"]
    assert 2 <= checkpointed <= done
    assert "test_macro_f1" not in killed.data.metrics

    other_model = run_cli(
        [
            *overrides,
            "model.lstm_units=16",
            "training.epochs=50",
            f"training.resume={killed.info.run_id}",
        ]
    )
    assert other_model.returncode == 1
    (line,) = error_lines(other_model.stderr)
    assert "model.lstm_units=16 but the run was trained with model.lstm_units=8" in line

    total = done + 2
    result = run_cli(
        [*overrides, f"training.epochs={total}", f"training.resume={killed.info.run_id}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed after epoch {checkpointed}" in result.stderr

    (run,) = runs_of(tmp_path)  # no new run
    assert run.info.run_id == killed.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(checkpointed)
    assert run.data.metrics["epochs_trained"] == total
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        # Epochs the killed job finished after its last checkpoint are trained (and logged)
        # again; every epoch number is there and the resumed ones continue the count.
        assert set(steps) == set(range(total)), key
        assert steps[-1] == total - 1, key
    for key in ("test_accuracy", "test_macro_f1", "final_val_macro_f1"):
        assert 0.0 <= run.data.metrics[key] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in artifacts
    assert "plots/learning_curves.png" in artifacts
    # The resumed job checkpointed into the killed job's folder, not one of its own; once the
    # run is FINISHED nothing can resume it, so its model file is deleted (the vocabulary, a
    # small record of what the run read, stays).
    folders = [p for p in (tmp_path / "outputs").rglob("checkpoint") if p.is_dir()]
    assert folders == [state_file.parent]
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["vocabulary.json"]

    again = run_cli(
        [*overrides, f"training.epochs={total + 1}", f"training.resume={run.info.run_id}"]
    )
    assert again.returncode == 1
    (line,) = error_lines(again.stderr)
    assert "already FINISHED" in line


def test_resume_of_an_unknown_run_or_one_without_checkpoint_is_one_line(tmp_path, kaggle_csv):
    overrides = [*tiny_overrides(tmp_path, *kaggle_csv), "training.epochs=1"]
    no_store = run_cli([*overrides, f"training.resume={'0' * 32}"])
    assert no_store.returncode == 1
    (line,) = error_lines(no_store.stderr)
    assert f"training.resume={'0' * 32}: no MLflow store at {tracking_uri(tmp_path)}" in line
    assert not (tmp_path / "mlruns").exists()

    # A run that has no checkpoint: created by hand, as an older version or another tool would.
    client = client_for(tmp_path)
    experiment = client.create_experiment("tests")
    bare = client.create_run(experiment, tags={"hydra_output_dir": str(tmp_path / "gone")})
    client.set_terminated(bare.info.run_id, "KILLED")
    # A RUNNING run whose owner lives (this test process) is not taken over.
    from genre_exp.tracking.liveness import process_tags

    live = client.create_run(
        experiment, tags={"hydra_output_dir": str(tmp_path / "gone"), **process_tags()}
    )
    taken = run_cli([*overrides, f"training.resume={live.info.run_id}"])
    assert taken.returncode == 1
    (line,) = error_lines(taken.stderr)
    assert f"the run is still RUNNING in process {os.getpid()}" in line
    client.set_terminated(live.info.run_id, "KILLED")
    unknown = run_cli([*overrides, f"training.resume={'0' * 32}"])
    assert unknown.returncode == 1
    (line,) = error_lines(unknown.stderr)
    assert f"training.resume={'0' * 32}: no such run in {tracking_uri(tmp_path)}" in line
    assert "Traceback" not in unknown.stderr
    missing = run_cli([*overrides, f"training.resume={bare.info.run_id}"])
    assert missing.returncode == 1
    (line,) = error_lines(missing.stderr)
    assert f"training.resume={bare.info.run_id}: no checkpoint in {tmp_path / 'gone'}" in line
    assert sorted(r.info.status for r in runs_of(tmp_path)) == ["KILLED", "KILLED"]
