"""``genre-exp compare`` against a real MLflow store holding runs shaped like genre-exp's."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import assert_figure_drawn


def make_store(tmp_path):
    """Two sweeps and a lone run, with the params, tags and metrics genre-exp logs."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("exp", artifact_location=(tmp_path / "a").as_uri())
    ids = {}
    for sweep in ("s1", "s2"):
        parent = client.create_run(experiment, run_name=f"sweep/{sweep}", tags={"sweep": "parent"})
        ids[sweep] = parent.info.run_id
        client.set_tag(parent.info.run_id, "sweep_id", parent.info.run_id)
        client.log_metric(parent.info.run_id, "sweep_jobs", 2)
        client.set_terminated(parent.info.run_id)
    rows = [
        ("s1", "lstm", "64", 0.30, 0.9),
        ("s1", "lstm_dropout", "64", 0.35, 1.2),
        ("s2", "lstm", "128", 0.25, 0.7),
        (None, "lstm", "64", 0.10, 1.5),
    ]
    for k, (sweep, model, dim, f1, loss) in enumerate(rows):
        tags = {"sweep_id": ids[sweep], "mlflow.parentRunId": ids[sweep]} if sweep else {}
        run = client.create_run(experiment, run_name=f"{model}/balanced/{k}", tags=tags)
        for key, value in {
            "model.name": model,
            "model.embedding_dim": dim,
            "data.genres": "['Rock', 'R&B']",
            "training.epochs": "20",
            "paths.root_dir": f"/tmp/{k}",
        }.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in {
            "test_macro_f1": f1,
            "test_accuracy": f1 + 0.05,
            "test_f1_R_B": f1 / 2,
            "test_f1_Rock": f1 * 2,
            "final_val_loss": loss,
        }.items():
            client.log_metric(run.info.run_id, key, value)
        # A per-epoch series: compare reads its last value.
        for step, value in enumerate([2.0, loss]):
            client.log_metric(run.info.run_id, "val_loss", value, step=step)
        time.sleep(0.01)
        client.set_terminated(run.info.run_id)
    return uri, ids


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", "compare", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def compare_here(capsys, *args: str) -> tuple[int, str, str]:
    """The command in this process (no interpreter start-up): exit code, stdout, stderr."""
    from genre_exp.commands.compare import main

    capsys.readouterr()  # what building the store printed is not the command's
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def markdown_table(path) -> pd.DataFrame:
    header, rule, *rows = path.read_text().splitlines()
    assert set(rule) <= set("|:- "), rule

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    return pd.DataFrame([cells(row) for row in rows], columns=cells(header))


def test_whole_experiment_sorted_with_differing_params(tmp_path):
    uri, _ = make_store(tmp_path)
    result = compare("--experiment", "exp", "--tracking-uri", uri, "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "o" / "compare.csv")
    # Best test macro-F1 first; parents left out. Each run's scores and per-genre F1 (in the
    # runs' label order, data.genres, not alphabetical) as the store has them.
    expected = pd.DataFrame(
        {
            "run": [
                "lstm_dropout/balanced/1",
                "lstm/balanced/0",
                "lstm/balanced/2",
                "lstm/balanced/3",
            ],
            "model.name": ["lstm_dropout", "lstm", "lstm", "lstm"],
            "model.embedding_dim": [64, 64, 128, 64],
            "test_macro_f1": [0.35, 0.30, 0.25, 0.10],
            "test_accuracy": [0.40, 0.35, 0.30, 0.15],
            "f1 Rock": [0.70, 0.60, 0.50, 0.20],
            "f1 R_B": [0.175, 0.15, 0.125, 0.05],
        }
    )
    pd.testing.assert_frame_equal(table[expected.columns], expected)
    # Only params that differ, between the run's identity and its scores; then duration.
    assert list(table.columns[:3]) == ["run", "run_id", "status"]
    assert set(table.columns[3:5]) == {"model.name", "model.embedding_dim"}
    assert list(table.columns[5:]) == [
        "test_macro_f1",
        "test_accuracy",
        "f1 Rock",
        "f1 R_B",
        "minutes",
    ]
    assert (table["status"] == "FINISHED").all() and (table["minutes"] >= 0).all()

    markdown = markdown_table(tmp_path / "o" / "compare.md")
    assert list(markdown.columns) == [c for c in table.columns if c != "run_id"]
    assert markdown["run"].tolist() == expected["run"].tolist()
    for column in expected.columns[2:]:
        assert markdown[column].astype(float).tolist() == expected[column].tolist(), column
    assert "lstm_dropout/balanced/1" in result.stdout
    # The top runs' bars, one colour each.
    assert_figure_drawn(tmp_path / "o" / "per_genre_f1.png", hues=4)


@pytest.mark.parametrize("metric", ["val_loss", "final_val_loss"])
def test_a_loss_sorts_lowest_first(tmp_path, capsys, metric):
    uri, _ = make_store(tmp_path)
    out = tmp_path / "o"
    code, _, err = compare_here(
        capsys, "--experiment", "exp", "--tracking-uri", uri, "--metric", metric, "--out", str(out)
    )
    assert code == 0, err
    table = pd.read_csv(out / "compare.csv")
    assert table[metric].tolist() == [0.7, 0.9, 1.2, 1.5]
    assert table["run"].tolist() == [
        "lstm/balanced/2",
        "lstm/balanced/0",
        "lstm_dropout/balanced/1",
        "lstm/balanced/3",
    ]
    assert markdown_table(out / "compare.md")["run"].tolist() == table["run"].tolist()


def test_one_sweep_by_another_metric(tmp_path, capsys):
    uri, ids = make_store(tmp_path)
    code, _, err = compare_here(
        capsys,
        "--experiment",
        "exp",
        "--tracking-uri",
        uri,
        "--sweep",
        ids["s1"],
        "--metric",
        "test_f1_R_B",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "compare.csv")
    assert table["run"].tolist() == ["lstm_dropout/balanced/1", "lstm/balanced/0"]
    assert list(table.columns[3:5]) == ["model.name", "test_f1_R_B"]
    assert "model.embedding_dim" not in table.columns  # the same in this sweep


def test_filter_string(tmp_path, capsys):
    uri, _ = make_store(tmp_path)
    code, _, err = compare_here(
        capsys,
        "--experiment",
        "exp",
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path / "o"),
        "--filter",
        "params.`model.embedding_dim` = '64' and metrics.test_macro_f1 > 0.2",
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "o" / "compare.csv")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nope"], "--experiment 'nope': not in"),
        (["--experiment", "exp", "--metric", "bogus"], "--metric bogus: no run has it"),
        (["--experiment", "exp", "--filter", "params.x = = 1"], "--filter 'params.x = = 1'"),
        (["--experiment", "exp", "--sweep", "0" * 32], "no runs in sweep 000"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, args, message):
    uri, _ = make_store(tmp_path)
    code, _, err = compare_here(capsys, *args, "--tracking-uri", uri, "--out", str(tmp_path / "o"))
    assert code == 1
    assert err.count("\n") == 1 and message in err, err


def test_missing_store_is_one_line(tmp_path, capsys):
    code, _, err = compare_here(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    assert code == 1
    assert "no MLflow store at" in err and err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()
