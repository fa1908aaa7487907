"""Using trained models end to end: registration at training, ``genre-exp predict``,
``genre-exp promote`` and MLflow's own HTTP scoring server, on two real tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    KAGGLE_GENRES,
    free_port,
    run_cli,
    serving,
    tiny_overrides,
    tracking_uri,
    write_kaggle_csv,
)

pytestmark = pytest.mark.slow

MODEL = "genres"
SWEEP = "sweep-b"


def client_for(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Run A registers its model as MODEL; run B (another seed, tagged as a sweep's job) does
    not."""
    root = tmp_path_factory.mktemp("use")
    write_kaggle_csv(root)
    base = tiny_overrides(root, root / "train.csv", root / "test.csv")
    first = run_cli([*base, f"mlflow.registered_model_name={MODEL}", "mlflow.run_name=a"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"model registered: models:/{MODEL}/1" in first.stderr
    second = run_cli([*base, "training.seed=7", f"+tags.sweep_id={SWEEP}", "mlflow.run_name=b"])
    assert second.returncode == 0, second.stderr[-3000:]
    client = client_for(root)
    experiment = client.get_experiment_by_name("tests").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    # The run tells the user the model URI that the predictions below load.
    assert f"model logged: runs:/{runs['a'].info.run_id}/model (models:/m-" in first.stderr
    return root, runs["a"], runs["b"]


def in_process(root: Path, model_uri: str, texts: list[str]) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"lyrics": texts}))


def predict_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["predict", *args, "--tracking-uri", tracking_uri(root)], cwd=root)


def test_training_registers_its_model(project):
    root, a, _ = project
    (version,) = client_for(root).search_model_versions(f"name = '{MODEL}'")
    assert str(version.version) == "1" and version.run_id == a.info.run_id


def test_predict_texts_files_and_tables_to_csv_json_and_stdout(project):
    root, a, _ = project
    song = "metalword metalsound the night\nmetalbeat"
    (root / "song.txt").write_text(song, encoding="utf-8")
    table = pd.read_csv(root / "test.csv").rename(columns={"Lyrics": "Words"})
    table.loc[3, "Words"] = None  # a missing lyric is predicted as empty text, not dropped
    table.to_parquet(root / "table.parquet")
    args = [f"runs:/{a.info.run_id}/model", "countryword the road", "song.txt", "table.parquet"]

    written = predict_cli(root, *args, "--column", "Words", "--batch-size", "16", "-o", "out.csv")
    assert written.returncode == 0, written.stderr[-3000:]
    assert "42 predictions written to out.csv" in written.stderr
    out = pd.read_csv(root / "out.csv")
    assert list(out.columns) == ["input", "genre", *KAGGLE_GENRES]
    assert out["input"].tolist()[:3] == ["countryword the road", "song.txt", "table.parquet:0"]
    probabilities = out[KAGGLE_GENRES].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert out["genre"].tolist() == [KAGGLE_GENRES[i] for i in probabilities.argmax(axis=1)]
    texts = ["countryword the road", song, *table["Words"].fillna("").tolist()]
    expected = in_process(root, f"runs:/{a.info.run_id}/model", texts)
    np.testing.assert_allclose(probabilities, expected.to_numpy(), atol=1e-5)

    as_json = predict_cli(root, *args[:3], "-o", "out.json")
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    records = json.loads((root / "out.json").read_text())
    assert [r["input"] for r in records] == ["countryword the road", "song.txt"]
    assert records[1]["genre"] == out["genre"][1]

    shown = predict_cli(root, f"models:/{MODEL}/1", "countryword the road")
    assert shown.returncode == 0, shown.stderr[-3000:]
    header, row = shown.stdout.strip().splitlines()
    assert header.split() == ["input", "genre", *KAGGLE_GENRES]
    assert row.split()[3] == out["genre"][0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["runs:/0123456789abcdef/model", "la la"],
            "model runs:/0123456789abcdef/model: cannot be loaded from",
        ),
        (["models:/nobody@champion", "la la"], "model models:/nobody@champion: cannot be loaded"),
        (["run:/x/model", "la la"], "model 'run:/x/model': expected runs:/<run id>/model"),
        (["runs:/x/model", "absent.csv"], "absent.csv: file not found"),
        (["runs:/x/model", "test.csv", "--column", "text"], "test.csv: missing column 'text'"),
        (["runs:/x/model", "la la", "-o", "out.xlsx"], "out.xlsx: unknown output type '.xlsx'"),
    ],
)
def test_predict_errors_are_one_line(project, args, expected):
    root, _, _ = project
    result = predict_cli(root, *args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "genre-exp predict: error:" in line]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def promote(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["promote", *args, "--tracking-uri", tracking_uri(root)])


def test_promote_aliases_the_best_run_registering_it_if_needed(project):
    root, a, b = project
    client = client_for(root)
    best = max([a, b], key=lambda r: r.data.metrics["final_val_macro_f1"])

    result = promote(root, "--experiment", "tests", "--name", MODEL)
    assert result.returncode == 0, result.stderr[-3000:]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == best.info.run_id
    assert f"models:/{MODEL}@champion -> version {champion.version} " in result.stdout
    assert "validated on different rows" not in result.stderr  # one data config: comparable

    # Only the sweep's job counts with --sweep; its model gets registered on the way.
    swept = promote(root, "--experiment", "tests", "--sweep", SWEEP, "--name", MODEL)
    assert swept.returncode == 0, swept.stderr[-3000:]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == b.info.run_id
    assert {v.run_id for v in client.search_model_versions(f"name = '{MODEL}'")} == {
        a.info.run_id,
        b.info.run_id,
    }

    # The loss-like metric picks the lowest; the default model name is the experiment's.
    by_loss = promote(root, "--experiment", "tests", "--metric", "loss")
    assert by_loss.returncode == 0, by_loss.stderr[-3000:]
    lowest = min([a, b], key=lambda r: r.data.metrics["loss"])
    assert client.get_model_version_by_alias("tests", "champion").run_id == lowest.info.run_id

    # A job of the sweep validated on another split: its score does not compare, and promote
    # says so while still choosing (here run b, the better one).
    other = client.create_run(a.info.experiment_id, tags={"sweep_id": SWEEP})
    for key, value in {**b.data.params, "data.seed": "7", "data.val_split": "by_artist"}.items():
        client.log_param(other.info.run_id, key, value)
    client.log_metric(other.info.run_id, "final_val_macro_f1", 0.0)
    client.set_terminated(other.info.run_id, "FINISHED")
    mixed = promote(root, "--experiment", "tests", "--sweep", SWEEP, "--name", MODEL)
    assert mixed.returncode == 0, mixed.stderr[-3000:]
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == b.info.run_id
    (note,) = [line for line in mixed.stderr.splitlines() if "note:" in line]
    assert "validated on different rows or weights (data.val_split: by_artist, stratified; " in note
    assert "data.seed: 42, 7), so their final_val_macro_f1 do not compare" in note


def test_promote_errors_are_one_line(project):
    root, _, _ = project
    client = client_for(root)
    experiment = client.get_experiment_by_name("tests").experiment_id
    modelless = client.create_run(experiment, tags={"sweep_id": "no-model"})
    client.log_metric(modelless.info.run_id, "final_val_macro_f1", 0.99)
    client.set_terminated(modelless.info.run_id, "FINISHED")
    for args, expected in [
        (["--experiment", "nope"], "--experiment nope: no such experiment in"),
        (["--experiment", "tests", "--metric", "nope"], "no finished run has the metric 'nope'"),
        (["--experiment", "tests", "--sweep", "none"], "--sweep none: no finished run has"),
        (
            ["--experiment", "tests", "--sweep", "no-model"],
            f"the best run {modelless.info.run_id} (final_val_macro_f1=0.99) has no logged model",
        ),
    ]:
        result = promote(root, *args)
        assert result.returncode == 1, args
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert expected in result.stderr, result.stderr


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_scoring_server_serves_the_registered_model(project):
    root, _, _ = project
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        # MLflow's server starts `uvicorn` by name.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri(root),
    }
    model_uri = f"models:/{MODEL}/1"
    base = f"http://127.0.0.1:{port}"
    with serving(
        [
            *(sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri),
            *("--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)),
        ],
        f"{base}/ping",
        env,
        timeout=180,
    ):
        texts = ["metalword metalsound the night", "", "jazzword é 🎵"]
        expected = in_process(root, model_uri, texts)
        split = {"dataframe_split": {"columns": ["lyrics"], "data": [[t] for t in texts]}}
        for payload in (split, {"inputs": {"lyrics": texts}}):
            status, answer = post(f"{base}/invocations", json.dumps(payload).encode())
            assert status == 200, answer
            got = pd.DataFrame(answer["predictions"])
            assert list(got.columns) == KAGGLE_GENRES
            np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-5)

        for body, message in [
            (
                {"dataframe_split": {"columns": ["lyrics"], "data": [[42]]}},
                "row 0 of 'lyrics' is int, expected text",
            ),
            (
                {"dataframe_split": {"columns": ["text"], "data": [["la la"]]}},
                "missing inputs ['lyrics']",
            ),
            (b"{not json", "valid JSON"),
        ]:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            status, answer = post(f"{base}/invocations", raw)
            assert 400 <= status < 500, answer
            assert message in answer["message"], answer
        # Still serving after the bad requests.
        status, answer = post(f"{base}/invocations", json.dumps(split).encode())
        assert status == 200 and len(answer["predictions"]) == 3
