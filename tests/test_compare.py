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


# Three configurations run with several seeds (the best single run is not in the best
# configuration), and a run that failed. Values: test macro-F1, final validation loss.
SEEDED = [
    # model, dim, training.seed, data.seed, test_macro_f1, final_val_loss
    ("lstm", "64", "1", "42", 0.29, 0.80),
    ("lstm", "64", "2", "42", 0.335, 0.82),
    ("lstm", "64", "10", "42", 0.38, 0.84),
    ("lstm_dropout", "64", "1", "42", 0.33, 0.70),
    ("lstm_dropout", "64", "2", "42", 0.35, 0.90),
    ("lstm_dropout", "64", "3", "42", 0.37, 1.10),
    ("lstm", "128", "1", "42", 0.20, 0.90),
    ("lstm", "128", "2", "7", 0.24, 0.95),
]


def make_seed_store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("seeds", artifact_location=(tmp_path / "a").as_uri())

    def new_run(k, model, dim, seed, data_seed):
        run = client.create_run(experiment, run_name=f"{model}/balanced/{k}")
        for key, value in {
            "model.name": model,
            "model.embedding_dim": dim,
            "training.seed": seed,
            "data.seed": data_seed,
            "data.genres": "['Rock', 'R&B']",
            "mlflow.run_name": f"run {k}",
        }.items():
            client.log_param(run.info.run_id, key, value)
        return run.info.run_id

    for k, (model, dim, seed, data_seed, f1, loss) in enumerate(SEEDED):
        run_id = new_run(k, model, dim, seed, data_seed)
        for key, value in {
            "test_macro_f1": f1,
            "test_accuracy": f1 + 0.05,
            "final_val_macro_f1": f1 - 0.01,
            "test_f1_R_B": f1 / 2,
            "test_f1_Rock": f1 * 2,
            "final_val_loss": loss,
        }.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id)
    # Killed after one epoch: its numbers are not a repeat of the configuration.
    failed = new_run(len(SEEDED), "lstm", "64", "4", "42")
    client.log_metric(failed, "final_val_loss", 0.1)
    client.set_terminated(failed, status="KILLED")
    return uri


def grouped_csv(out) -> pd.DataFrame:
    return pd.read_csv(out / "compare_grouped.csv", dtype={"training.seed": str})


def test_seed_repeats_are_one_row_with_mean_and_std(tmp_path):
    uri = make_seed_store(tmp_path)
    out = tmp_path / "o"
    result = compare(
        "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out), "--group-by",
        "--seed-params", "training.seed,data.seed",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = grouped_csv(out)
    # Best mean first: lstm_dropout (0.35 ± 0.02) although lstm/64 has the best single run
    # (0.38); lstm/64's mean is within one std of it, lstm/128's is not. Sample stds (n-1).
    expected = pd.DataFrame(
        {
            "model.embedding_dim": [64, 64, 128],
            "model.name": ["lstm_dropout", "lstm", "lstm"],
            "runs": [3, 3, 2],
            "training.seed": ["1 2 3", "1 2 10", "1 2"],
            "data.seed": ["42 42 42", "42 42 42", "7 42"],
            "test_macro_f1 mean": [0.35, 0.335, 0.22],
            "test_macro_f1 std": [0.02, 0.045, 0.0283],
            "within 1 std of best": ["best", "yes", "no"],
            "test_accuracy mean": [0.40, 0.385, 0.27],
            "test_accuracy std": [0.02, 0.045, 0.0283],
            "final_val_macro_f1 mean": [0.34, 0.325, 0.21],
            "f1 Rock mean": [0.70, 0.67, 0.44],
            "f1 Rock std": [0.04, 0.09, 0.0566],
            "f1 R_B mean": [0.175, 0.1675, 0.11],
            "f1 R_B std": [0.01, 0.0225, 0.0141],
        }
    )
    pd.testing.assert_frame_equal(table[expected.columns], expected, check_exact=False)
    assert list(table.columns[:5]) == list(expected.columns[:5])
    assert [len(ids.split()) for ids in table["run_ids"]] == [3, 3, 2]
    # The per-run table is still written, best single run first.
    assert pd.read_csv(out / "compare.csv")["test_macro_f1"].iloc[0] == 0.38

    markdown = markdown_table(out / "compare_grouped.md")
    assert markdown["model.name"].tolist() == expected["model.name"].tolist()
    assert markdown["test_macro_f1"].tolist() == [
        "0.3500 ± 0.0200",
        "0.3350 ± 0.0450",
        "0.2200 ± 0.0283",
    ]
    assert markdown["within 1 std of best"].tolist() == ["best", "yes", "no"]
    assert markdown["f1 Rock"].astype(float).tolist() == [0.70, 0.67, 0.44]
    assert "0.3500 ± 0.0200" in result.stdout
    assert "3 configurations from 8 FINISHED runs" in result.stdout
    assert "1 run not FINISHED left out" in result.stdout
    assert_figure_drawn(out / "per_genre_f1_grouped.png", hues=3)


def test_data_seed_is_a_configuration_unless_named_a_seed(tmp_path, capsys):
    uri = make_seed_store(tmp_path)
    out = tmp_path / "o"
    code, stdout, err = compare_here(
        capsys, "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out), "--group-by"
    )
    assert code == 0, err
    table = grouped_csv(out)
    # By default only training.seed is a seed: lstm/128's two runs drew different training
    # rows (data.seed 42 and 7), so they are two configurations of one run each, with no std.
    assert "data.seed" in table.columns[:3]
    single = table.loc[table["model.embedding_dim"].eq(128)].sort_values("data.seed")
    assert single["runs"].tolist() == [1, 1]
    assert single["data.seed"].tolist() == [7, 42]
    assert single["test_macro_f1 mean"].tolist() == [0.24, 0.20]
    assert single["test_macro_f1 std"].isna().all()
    assert table["test_macro_f1 mean"].tolist() == [0.35, 0.335, 0.24, 0.20]
    assert table["within 1 std of best"].tolist() == ["best", "yes", "no", "no"]
    assert "seeds: training.seed\n" in stdout


def test_group_by_named_params(tmp_path, capsys):
    uri = make_seed_store(tmp_path)
    out = tmp_path / "o"
    code, stdout, err = compare_here(
        capsys, "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out),
        "--group-by", "params.model.name",
    )  # fmt: skip
    assert code == 0, err
    table = grouped_csv(out)
    assert list(table.columns[:3]) == ["model.name", "runs", "training.seed"]
    assert table["model.name"].tolist() == ["lstm_dropout", "lstm"]
    assert table["runs"].tolist() == [3, 5]
    lstm = [f1 for model, *_, f1, _ in SEEDED if model == "lstm"]
    assert table["test_macro_f1 mean"].iloc[1] == pytest.approx(pd.Series(lstm).mean(), abs=1e-4)
    assert table["test_macro_f1 std"].iloc[1] == pytest.approx(pd.Series(lstm).std(), abs=1e-4)
    assert table["training.seed"].iloc[1] == "1 1 2 2 10"
    # The grouping hides a difference: say so.
    assert "note: data.seed, model.embedding_dim also differ inside a configuration" in stdout


def test_a_loss_groups_lowest_mean_first(tmp_path, capsys):
    uri = make_seed_store(tmp_path)
    out = tmp_path / "o"
    code, _, err = compare_here(
        capsys, "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out),
        "--group-by", "--seed-params", "training.seed,data.seed", "--metric", "final_val_loss",
    )  # fmt: skip
    assert code == 0, err
    table = grouped_csv(out)
    assert table["final_val_loss mean"].tolist() == [0.82, 0.9, 0.925]
    assert table["final_val_loss std"].tolist() == [0.02, 0.2, 0.0354]
    assert table["model.name"].tolist() == ["lstm", "lstm_dropout", "lstm"]
    assert table["within 1 std of best"].tolist() == ["best", "yes", "no"]
    # The killed run's loss (0.1, the lowest) is not averaged in.
    assert table["runs"].tolist() == [3, 3, 2]
    markdown = markdown_table(out / "compare_grouped.md")
    assert list(markdown.columns[2:7]) == [
        "runs",
        "training.seed",
        "data.seed",
        "final_val_loss",
        "within 1 std of best",
    ]
    assert markdown["final_val_loss"].tolist()[0] == "0.8200 ± 0.0200"


def test_one_run_per_configuration_says_there_is_no_std(tmp_path, capsys):
    uri, ids = make_store(tmp_path)
    code, stdout, err = compare_here(
        capsys, "--experiment", "exp", "--tracking-uri", uri, "--out", str(tmp_path / "o"),
        "--sweep", ids["s1"], "--group-by", "--seed-params", "training.epochs",
    )  # fmt: skip
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "compare_grouped.csv")
    assert table["model.name"].tolist() == ["lstm_dropout", "lstm"]
    assert table["runs"].tolist() == [1, 1]
    assert table["test_macro_f1 mean"].tolist() == [0.35, 0.30]
    assert table["test_macro_f1 std"].isna().all()
    assert table["within 1 std of best"].tolist() == ["best", "unknown"]
    assert markdown_table(tmp_path / "o" / "compare_grouped.md")["test_macro_f1"].tolist() == [
        "0.3500",
        "0.3000",
    ]
    assert "each configuration has one run, so no std" in stdout


def test_one_run_each_because_data_seed_follows_the_seed_points_to_seed_params(tmp_path, capsys):
    """The README's protocol sets ``data.seed=${training.seed}``: counted as a setting, every
    seed is its own configuration; the hint names the option that counts it as a seed."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("follow", artifact_location=(tmp_path / "a").as_uri())
    for seed in ("1", "2", "3"):
        run_id = client.create_run(experiment).info.run_id
        for key, value in {"model.name": "pool", "training.seed": seed, "data.seed": seed}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "test_macro_f1", 0.3 + int(seed) / 100)
        client.set_terminated(run_id)
    args = ["--experiment", "follow", "--tracking-uri", uri, "--out", str(tmp_path / "o")]

    code, stdout, err = compare_here(capsys, *args, "--group-by")
    assert code == 0, err
    assert "3 configurations from 3 FINISHED runs" in stdout
    assert (
        "each configuration has one run, so no std: data.seed also differ; if they repeat a "
        "configuration, add them: --seed-params training.seed,data.seed" in stdout
    )
    code, stdout, err = compare_here(
        capsys, *args, "--group-by", "--seed-params", "training.seed,data.seed"
    )
    assert code == 0, err
    assert "1 configuration from 3 FINISHED runs" in stdout
    assert "no std" not in stdout


def test_grouped_figure_has_error_bars_of_the_stds(tmp_path):
    import matplotlib.pyplot as plt

    from genre_exp import plots
    from genre_exp.comparison import grouped_table, per_genre_group_frames
    from genre_exp.tracking.queries import search_runs

    uri = make_seed_store(tmp_path)
    groups = grouped_table(
        search_runs(uri, "seeds"), "test_macro_f1", None, ["training.seed", "data.seed"]
    )
    means, stds = per_genre_group_frames(groups, top=2)
    assert list(means.index) == ["Rock", "R_B"]
    assert list(means.columns) == [
        "model.embedding_dim=64, model.name=lstm_dropout (n=3)",
        "model.embedding_dim=64, model.name=lstm (n=3)",
    ]
    figure = plots.per_genre_f1_figure(means, stds)
    from matplotlib.container import BarContainer

    bars = [c for c in figure.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 2
    for container, label in zip(bars, means.columns, strict=True):
        assert [b.get_height() for b in container] == pytest.approx(means[label].tolist())
        (segments,) = container.errorbar.lines[2]
        spans = [high - low for (_, low), (_, high) in segments.get_segments()]
        assert spans == pytest.approx((2 * stds[label]).tolist())
    plt.close(figure)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group-by", "model.bogus"], "--group-by model.bogus: no run has this param; params"),
        (["--group-by", "model.nme"], "--group-by model.nme: no run has this param; did you mean"),
        (["--group-by", "--seed-params", "data.sed"], "--seed-params data.sed: no run has"),
        (["--group-by", "training.seed"], "--group-by training.seed: it is a seed"),
        (["--group-by", "--metric", "bogus"], "--metric bogus: no run has it"),
    ],
)
def test_grouping_errors_are_one_line(tmp_path, capsys, args, message):
    uri = make_seed_store(tmp_path)
    out = tmp_path / "o"
    code, _, err = compare_here(
        capsys, "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out), *args
    )
    assert code == 1
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_the_model_configs_copy_of_the_genres_is_no_setting():
    """A sweep's pruned runs have no logged model, so no ``genres`` param (MLflow's copy of the
    model's config); it must not look like a setting that differs between configurations."""
    from genre_exp.comparison import differing_params

    runs = pd.DataFrame(
        {
            "params.model.name": ["pool", "cnn", "pool"],
            "params.data.genres": ["['Rock', 'Pop']"] * 3,
            "params.genres": ["['Rock', 'Pop']", None, "['Rock', 'Pop']"],
        }
    )
    assert differing_params(runs) == ["params.model.name"]
