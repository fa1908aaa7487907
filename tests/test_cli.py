"""End to end through the real CLI in subprocesses: Hydra, Keras training and a real MLflow
store in a temporary folder."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    KAGGLE_GENRES,
    interrupt_when,
    run_cli,
    tiny_overrides,
    tracking_uri,
    write_kaggle_csv,
)

from genre_exp.evaluate import metric_safe

pytestmark = pytest.mark.slow

EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]
ARTIFACTS = {
    "plots/confusion_matrix.png",
    "plots/learning_curves.png",
    "plots/genre_distribution.png",
    "evaluation/test_confusion_matrix.csv",
    "evaluation/test_classification_report.txt",
    "evaluation/test_per_genre.json",
    "config/config.yaml",
    "hydra/config.yaml",
    "hydra/overrides.yaml",
    "hydra/genre_exp.log",
    "data/summary.json",
}


def client_for(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


def all_runs(root: Path, experiment: str = "tests"):
    client = client_for(root)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    paths = set()
    for item in client.list_artifacts(run_id, path):
        paths |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real run: lstm_dropout on balanced Kaggle-layout CSVs."""
    root = tmp_path_factory.mktemp("project")
    write_kaggle_csv(root)
    result = run_cli(
        [
            "model=lstm_dropout",
            "data=balanced",
            *tiny_overrides(root, root / "train.csv", root / "test.csv"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = all_runs(root)
    assert len(runs) == 1
    return root, runs[0], result


def test_run_is_finished_with_a_readable_name(trained):
    _, run, result = trained
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("lstm_dropout/balanced/")
    assert "test accuracy" in result.stderr and "macro avg" in result.stderr


def test_params_are_the_flattened_resolved_config(trained):
    root, run, _ = trained
    params = run.data.params
    assert params["model.lstm_units"] == "8"
    assert params["model.dropout"] == "0.5"
    assert params["model.batch_norm"] == "True"
    assert params["data.balance"] == "undersample"
    assert params["data.train_path"] == str(root / "train.csv")
    assert params["training.optimizer"] == "adam"
    assert params["mlflow.experiment_name"] == "tests"
    assert params["paths.root_dir"] == str(root)


def test_tags_record_code_overrides_data_and_folder(trained):
    root, run, _ = trained
    tags = run.data.tags
    assert tags["git_commit"]
    assert "model=lstm_dropout" in tags["hydra_overrides"]
    for split in ("train", "test"):
        expected = hashlib.sha256((root / f"{split}.csv").read_bytes()).hexdigest()
        assert tags[f"data.{split}_sha256"] == expected
    output_dir = Path(tags["hydra_output_dir"])
    assert output_dir.is_dir() and output_dir.is_relative_to(root / "outputs")
    assert (output_dir / "genre_exp.log").is_file()


def test_per_epoch_and_final_metrics(trained):
    root, run, _ = trained
    client = client_for(root)
    epochs = int(run.data.metrics["epochs_trained"])
    assert 1 <= epochs <= 2
    for key in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(epochs)), key
    metrics = run.data.metrics
    for key in ("test_accuracy", "test_macro_f1", "test_weighted_f1", "final_val_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    for genre in KAGGLE_GENRES:
        for kind in ("f1", "precision", "recall"):
            assert f"test_{kind}_{metric_safe(genre)}" in metrics
    assert "test_f1_R_B" in metrics and "test_f1_Hip_Hop" in metrics
    assert metrics["data_dropped_train_empty_lyrics"] == 0
    assert metrics["data_test_rows"] == 40


def test_artifacts(trained, tmp_path):
    root, run, _ = trained
    client = client_for(root)
    paths = artifact_paths(client, run.info.run_id)
    assert paths >= ARTIFACTS, ARTIFACTS - paths
    local = Path(client.download_artifacts(run.info.run_id, "evaluation", str(tmp_path)))
    confusion = pd.read_csv(local / "test_confusion_matrix.csv", index_col=0)
    assert list(confusion.index) == KAGGLE_GENRES == list(confusion.columns)
    assert confusion.to_numpy().sum() == 40
    report = (local / "test_classification_report.txt").read_text()
    assert "precision    recall  f1-score   support" in report
    assert all(genre in report for genre in KAGGLE_GENRES)
    summary = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "data/summary.json", str(tmp_path))
        ).read_text()
    )
    assert set(summary["genres"]["train"].values()) == {12}
    # Artifacts sit beside the SQLite store, not in the working folder.
    assert run.info.artifact_uri.startswith((root / "mlruns" / "artifacts").as_uri())


def test_datasets_are_logged_as_inputs(trained):
    _, run, _ = trained
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "testing"}
    assert all(d.digest for d in inputs.values())
    assert inputs["testing"].name == "balanced-testing"


def test_logged_model_predicts_raw_lyrics_in_a_fresh_process(trained):
    root, run, _ = trained
    code = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({tracking_uri(root)!r})
model = mlflow.pyfunc.load_model("runs:/{run.info.run_id}/model")
out = model.predict(pd.DataFrame({{"lyrics": ["metalword metalsound the night", "", "é 🎵"]}}))
print(json.dumps({{"columns": list(out.columns), "sums": out.sum(axis=1).tolist()}}))
print(json.dumps(model.metadata.get_input_schema().to_dict()))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    answer, schema = json.loads(lines[-2]), json.loads(lines[-1])
    assert answer["columns"] == KAGGLE_GENRES
    assert answer["sums"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-4)
    assert schema == [{"type": "string", "name": "lyrics", "required": True}]


def write_bad_inputs(root: Path) -> None:
    (root / "train.txt").write_text("x")
    (root / "latin1.csv").write_bytes("Genre,Lyrics\nPop,caf\xe9\n".encode("latin-1"))
    frame = pd.read_csv(root / "train.csv")
    frame.drop(columns=["Lyrics"]).to_csv(root / "no_lyrics.csv", index=False)
    frame.loc[0, "Genre"] = "Opera"
    frame.to_csv(root / "unknown_genre.csv", index=False)


@pytest.mark.parametrize(
    ("train_file", "expected"),
    [
        ("absent.csv", "absent.csv: file not found"),
        ("train.txt", "train.txt: unknown file type '.txt'"),
        ("no_lyrics.csv", "no_lyrics.csv: missing column 'lyrics'"),
        ("latin1.csv", "latin1.csv: not valid UTF-8 text"),
        ("unknown_genre.csv", "genres outside data.genres: 'Opera' (1 row)"),
    ],
)
def test_bad_input_ends_with_one_line_and_earlier_runs_untouched(trained, train_file, expected):
    root, first, _ = trained
    write_bad_inputs(root)
    result = run_cli(
        [
            *tiny_overrides(root, root / "train.csv", root / "test.csv"),
            f"data.train_path={root / train_file}",
        ]
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    runs = all_runs(root)
    assert [r.info.run_id for r in runs] == [first.info.run_id]
    assert runs[0].info.status == "FINISHED"


def test_error_after_the_run_started_marks_it_failed(tmp_path, kaggle_csv):
    # The store named by MLFLOW_TRACKING_URI wins over the project default.
    elsewhere = tmp_path / "elsewhere"
    result = run_cli(
        [*tiny_overrides(tmp_path, *kaggle_csv), "model.dropout=1.5"],
        env={"MLFLOW_TRACKING_URI": tracking_uri(elsewhere)},
    )
    assert result.returncode == 1
    assert "model.dropout=1.5: expected 0 <= dropout < 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists()
    (run,) = all_runs(elsewhere)
    assert run.info.status == "FAILED"
    assert "model.dropout=1.5" in run.data.tags["error"]


def test_unreachable_tracking_server_fails_at_start(tmp_path, kaggle_csv):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(
        [*tiny_overrides(tmp_path, *kaggle_csv), f"mlflow.tracking_uri=http://127.0.0.1:{port}"],
        timeout=60,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1
    assert f"mlflow.tracking_uri=http://127.0.0.1:{port}: tracking server unreachable" in errors[0]
    assert "data:" not in result.stderr  # stopped before reading any data


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_ends_killed_with_its_metrics(tmp_path, kaggle_csv, signum):

    overrides = [
        *tiny_overrides(tmp_path, *kaggle_csv),
        "training.epochs=100000",
        "training.early_stopping.enabled=false",
        "mlflow.log_model=false",
    ]

    def first_epoch_logged() -> bool:
        # Touch the store only once the job has created it: two processes creating one
        # SQLite store at once race on its tables.
        logs = [p.read_text() for p in (tmp_path / "outputs").rglob("genre_exp.log")]
        runs = all_runs(tmp_path) if any("MLflow run" in text for text in logs) else []
        return bool(runs and client_for(tmp_path).get_metric_history(runs[0].info.run_id, "loss"))

    ended = interrupt_when(overrides, first_epoch_logged, signum)
    stderr = ended.stderr
    assert ended.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    (run,) = all_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert client_for(tmp_path).get_metric_history(run.info.run_id, "val_macro_f1")

    # The store is intact and the next run works.
    again = run_cli(
        [*tiny_overrides(tmp_path, *kaggle_csv), "training.epochs=1", "mlflow.log_model=false"]
    )
    assert again.returncode == 0, again.stderr[-2000:]
    statuses = sorted(r.info.status for r in all_runs(tmp_path))
    assert statuses == ["FINISHED", "KILLED"]


def test_multirun_groups_jobs_under_one_parent(tmp_path, kaggle_csv):
    result = run_cli(
        [
            "-m",
            "model=lstm,lstm_dropout",
            "mlflow.log_model=false",
            *tiny_overrides(tmp_path, *kaggle_csv),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = all_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["sweep_id"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["model.name"] for c in children) == ["lstm", "lstm_dropout"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.metrics["sweep_jobs"] == 2
    assert parent.data.metrics["sweep_failed"] == 0
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert "model=lstm,lstm_dropout" in parent.data.tags["hydra_overrides"]
