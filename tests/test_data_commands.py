"""``genre-exp data download|prepare|report`` and where training finds its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import KAGGLE_GENRES, kaggle_frames

from genre_exp.data import prepare as prep
from genre_exp.data.files import default_folders, resolve_paths
from genre_exp.errors import DataError


def raw_kaggle(folder: Path) -> dict:
    """Kaggle-layout train.csv/test.csv with known problems; returns the expected counts."""
    train, test = kaggle_frames(
        train_per_genre={g: 6 for g in ["Pop", "Rock", "Jazz"]},
        genres=["Pop", "Rock", "Jazz"],
        test_per_genre=3,
    )
    # Row 0: the same lyrics as a test song (different spacing and case).
    train.loc[0, "Lyrics"] = "  " + test.loc[4, "Lyrics"].upper().replace(" ", "   ") + " "
    # Row 1: the same artist and song as a test song, named as train names them.
    train.loc[1, ["Artist", "Song"]] = ["The Pop Band", "Pop Tune 2"]
    test.loc[2, ["Artist", "Song"]] = ["the-pop-band", "pop-tune-2"]
    # Row 2: empty lyrics; rows 3-4: duplicates of rows 5-6; row 7: no genre.
    train.loc[2, "Lyrics"] = "   "
    train.loc[3, "Lyrics"] = train.loc[5, "Lyrics"]
    train.loc[4, "Lyrics"] = train.loc[6, "Lyrics"]
    train.loc[7, "Genre"] = ""
    # Test: one odd character in Windows-1252, the encoding some raw exports come in.
    test.loc[0, "Lyrics"] = test.loc[0, "Lyrics"] + " café\u2019s"
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False, encoding="cp1252")
    return {"train_raw": len(train), "test_raw": len(test)}


def test_prepare_counts_and_overlap_are_exact(tmp_path):
    expected = raw_kaggle(tmp_path / "raw")
    prepared = prep.run(tmp_path / "raw", tmp_path / "out")
    s = prepared.summary
    assert s["dropped"]["train"] == {
        "raw_rows": expected["train_raw"],
        "empty_lyrics": 1,
        "missing_genre": 1,
        "unknown_genre": 0,
        "duplicate_lyrics": 2,
    }
    assert s["dropped"]["test"] == {
        "raw_rows": 9,
        "empty_lyrics": 0,
        "missing_genre": 0,
        "unknown_genre": 0,
        "duplicate_lyrics": 0,
    }
    assert s["unknown_genres"] == {"train": {}, "test": {}}
    assert s["train"]["rows"] == 18 - 4
    assert s["overlap"] == {
        "same_lyrics": 1,
        "same_artist_song": 1,
        "train_rows": 2,
        "dropped_from_train": 0,
    }
    assert s["encodings"] == {"train": "utf-8-sig", "test": "cp1252"}
    assert sum(s["train"]["genres"].values()) == 14
    # Duplicates keep their first row: rows 5 and 6 (both "pt") go, rows 3 and 4 stay.
    assert s["train"]["languages"] == {"en": 10, "pt": 4}
    assert s["test"]["languages"] == {"(none)": 9}

    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert list(train.columns) == ["artist", "song", "genre", "language", "lyrics"]
    assert list(test.columns) == list(train.columns)
    assert len(train) == 14 and len(test) == 9
    assert test["lyrics"].str.contains("café\u2019s").sum() == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == s
    umask = os.umask(0)
    os.umask(umask)
    for name in ("train.parquet", "test.parquet", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_drop_overlap_removes_test_songs_from_train(tmp_path):
    raw_kaggle(tmp_path / "raw")
    prepared = prep.run(tmp_path / "raw", tmp_path / "out", drop_overlap=True)
    assert prepared.summary["overlap"]["dropped_from_train"] == 2
    assert prepared.summary["dropped"]["train"]["overlap_with_test"] == 2
    assert len(prepared.train) == 12
    again = prep.prepare(
        {"train": tmp_path / "out" / "train.parquet", "test": tmp_path / "out" / "test.parquet"}
    )
    assert again.summary["overlap"]["train_rows"] == 0


def test_prepare_reads_a_zip_archive_with_nested_files(tmp_path):
    raw_kaggle(tmp_path / "raw")
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as archive:
        for name in ("train.csv", "test.csv"):
            archive.write(tmp_path / "raw" / name, f"lyrics-data/{name}")
    prepared = prep.run(tmp_path / "archive.zip", tmp_path / "out")
    assert prepared.summary["train"]["rows"] == 14


def test_interrupted_prepare_leaves_the_old_files_whole(tmp_path, monkeypatch):
    raw_kaggle(tmp_path / "raw")
    out = tmp_path / "out"
    prep.run(tmp_path / "raw", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real = pd.DataFrame.to_parquet

    def half_then_die(self, path, *args, **kwargs):
        if "test" in Path(path).name:
            Path(path).write_bytes(b"PAR1 half a file")
            raise KeyboardInterrupt
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        prep.run(tmp_path / "raw", out, drop_overlap=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        ("empty_folder", r"no train\.csv or train\.parquet in it"),
        ("not_a_zip", r"not a readable zip archive"),
        ("no_lyrics", r"test\.csv: missing column 'lyrics'"),
    ],
)
def test_prepare_errors(tmp_path, setup, pattern):
    raw = tmp_path / "raw"
    raw.mkdir()
    if setup == "not_a_zip":
        raw = tmp_path / "raw.zip"
        raw.write_bytes(b"nope")
    elif setup == "no_lyrics":
        raw_kaggle(raw)
        pd.read_csv(raw / "test.csv", encoding="cp1252").drop(columns="Lyrics").to_csv(
            raw / "test.csv", index=False
        )
    with pytest.raises(DataError, match=pattern):
        prep.run(raw, tmp_path / "out")


def data_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command from a user's shell: no data, store or project root set by a variable."""
    chosen = {"GENRE_EXP_DATA", "GENRE_EXP_ROOT", "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", "data", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in chosen} | (env or {}),
    )


def test_prepare_command_prints_and_writes(tmp_path):
    raw_kaggle(tmp_path / "raw")
    result = data_command(
        "prepare", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--drop-overlap"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "train: 12 rows (of 18; dropped: empty_lyrics 1, missing_genre 1, "
        "duplicate_lyrics 2, overlap_with_test 2)" in result.stdout
    )
    assert (
        "overlap: 2 train rows are test songs (1 same lyrics, 1 same artist+song)" in result.stdout
    )
    assert (tmp_path / "out" / "summary.json").is_file()


def test_download_without_network_says_what_to_do_in_one_line(tmp_path):
    # kagglehub's test environment points at a loopback port nobody listens on.
    result = data_command(
        "download",
        "--out",
        str(tmp_path / "raw"),
        env={"KAGGLE_API_ENVIRONMENT": "TEST", "KAGGLEHUB_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no network" in lines[0] and "by hand" in lines[0]
    assert str(tmp_path / "raw") in lines[0]
    assert not (tmp_path / "raw").exists()


def test_report_writes_figures_and_logs_them_to_a_run(tmp_path):
    import mlflow

    raw_kaggle(tmp_path / "raw")
    prep.run(tmp_path / "raw", tmp_path / "processed")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(
        client.create_experiment("r", artifact_location=(tmp_path / "artifacts").as_uri())
    )
    result = data_command(
        "report",
        "--data",
        str(tmp_path / "processed"),
        "--out",
        str(tmp_path / "report"),
        "--run-id",
        run.info.run_id,
        "--tracking-uri",
        uri,
    )
    assert result.returncode == 0, result.stderr
    names = {"genre_distribution.png", "language_distribution.png", "lyric_lengths.png"}
    assert {p.name for p in (tmp_path / "report").iterdir()} == names
    assert all((tmp_path / "report" / n).stat().st_size > 5000 for n in names)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "data_report")}
    assert logged == {f"data_report/{n}" for n in names}


@pytest.mark.parametrize("store_exists", [True, False])
def test_report_on_an_unknown_run_is_one_line(tmp_path, store_exists):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    if store_exists:
        mlflow.MlflowClient(uri).search_experiments()
    raw_kaggle(tmp_path / "raw")
    result = data_command(
        "report",
        "--data",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "report"),
        "--run-id",
        "0" * 32,
        "--tracking-uri",
        uri,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    expected = "no such run in" if store_exists else "no MLflow store at"
    assert f"--run-id {'0' * 32}: {expected} {uri}" in result.stderr
    assert not (tmp_path / "report").exists()


def make_pair(folder: Path, suffix: str = ".parquet") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"{split}{suffix}").write_text("x")


def test_resolution_order(tmp_path, monkeypatch):
    env_folder, processed = tmp_path / "env", tmp_path / "data" / "processed"
    monkeypatch.delenv("GENRE_EXP_DATA", raising=False)
    with pytest.raises(DataError) as error:
        resolve_paths(None, None, default_folders(tmp_path / "data"))
    assert "$GENRE_EXP_DATA (unset)" in str(error.value)
    assert "genre-exp data download && genre-exp data prepare" in str(error.value)

    make_pair(processed)
    train, test, origin = resolve_paths(None, None, default_folders(tmp_path / "data"))
    assert (train, test) == (processed / "train.parquet", processed / "test.parquet")
    assert origin.startswith("data/processed")

    make_pair(env_folder, ".csv")
    monkeypatch.setenv("GENRE_EXP_DATA", str(env_folder))
    train, _, origin = resolve_paths(None, None, default_folders(tmp_path / "data"))
    assert train == env_folder / "train.csv" and origin.startswith("$GENRE_EXP_DATA")

    train, test, origin = resolve_paths(
        "/a/train.csv", "/a/test.csv", default_folders(tmp_path / "data")
    )

    # A $GENRE_EXP_DATA that holds no data is an error, not a folder to skip.
    monkeypatch.setenv("GENRE_EXP_DATA", str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match=r"\$GENRE_EXP_DATA=.*nothing-here: no train and test"):
        resolve_paths(None, None, default_folders(tmp_path / "data"))
    assert (str(train), str(test)) == ("/a/train.csv", "/a/test.csv")


@pytest.mark.slow
def test_prepare_then_train_on_the_prepared_data(tmp_path):
    from conftest import run_cli, tiny_overrides, tracking_uri

    raw_kaggle(tmp_path / "raw")
    result = data_command(
        "prepare", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "data" / "processed")
    )
    assert result.returncode == 0, result.stderr
    overrides = [
        o
        for o in tiny_overrides(tmp_path, tmp_path, tmp_path)
        if not o.startswith(("data.train_path", "data.test_path", "data.genres"))
    ]
    trained = run_cli([*overrides, "data.genres=[Pop,Rock,Jazz]", "mlflow.log_model=false"])
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "data from data/processed" in trained.stderr
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.data.tags["data.train_path"] == str(
        tmp_path / "data" / "processed" / "train.parquet"
    )


@pytest.mark.parametrize("pointed", [False, True])
def test_report_without_data_names_its_own_options(tmp_path, pointed):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = data_command(
        "report",
        *(["--data", str(empty)] if pointed else []),
        env={"GENRE_EXP_ROOT": str(tmp_path)},
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    looked = f"--data ({empty})" if pointed else "$GENRE_EXP_DATA (unset), data/processed"
    assert line.startswith(
        f"genre-exp data report: error: no data: no train/test .parquet or .csv in {looked}"
    )
    assert line.endswith("or pass --data FOLDER or --train FILE --test FILE")
    assert "data.train_path" not in line
    assert not (tmp_path / "outputs").exists()


def test_report_names_train_and_test_files_as_it_was_given_them(tmp_path):
    raw_kaggle(tmp_path / "raw")
    prep.run(tmp_path / "raw", tmp_path / "processed")
    train, test = tmp_path / "processed" / "train.parquet", tmp_path / "processed" / "test.parquet"
    result = data_command(
        "report", "--train", str(train), "--test", str(test), "--out", str(tmp_path / "report")
    )
    assert result.returncode == 0, result.stderr
    assert f"data from --train/--test: {train}, {test}" in result.stdout


LONG_FRAGMENT = "I love you baby, and if it's quite alright, I need you baby"


def raw_kaggle_misparsed(folder: Path) -> None:
    """Kaggle's layouts with all ten genres, and rows whose genre cell holds a fragment of text
    or a year, as CSV mis-parsing leaves in Kaggle's real train file."""
    train, test = kaggle_frames()
    train.loc[[0, 20], "Genre"] = LONG_FRAGMENT
    train.loc[40, "Genre"] = "1999"
    train.loc[60, "Genre"] = "I love you baby"
    test.loc[0, "Genre"] = "1999"
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)


def test_prepare_drops_rows_whose_genre_is_not_a_genre(tmp_path):
    raw_kaggle_misparsed(tmp_path / "raw")
    result = data_command("prepare", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["genres"] == KAGGLE_GENRES
    assert summary["dropped"]["train"]["unknown_genre"] == 4
    assert summary["dropped"]["test"]["unknown_genre"] == 1
    assert summary["unknown_genres"] == {
        "train": {LONG_FRAGMENT: 2, "1999": 1, "I love you baby": 1},
        "test": {"1999": 1},
    }
    for split, rows in {"train": 255 - 4, "test": 40 - 1}.items():
        frame = pd.read_parquet(tmp_path / "out" / f"{split}.parquet")
        assert set(frame["genre"]) == set(KAGGLE_GENRES) and len(frame) == rows
    assert "train: 251 rows (of 255; dropped: unknown_genre 4)" in result.stdout
    assert (
        '  dropped as not in --genres: "I love you baby, and if it\'s quite al..." 2, '
        "'1999' 1, 'I love you baby' 1\n" in result.stdout
    )
    assert "  dropped as not in --genres: '1999' 1\n" in result.stdout


def test_prepare_keeps_the_genres_it_is_given(tmp_path):
    raw_kaggle(tmp_path / "raw")
    result = data_command(
        "prepare",
        "--raw",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "out"),
        "--genres",
        "Pop",
        "Rock",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["genres"] == ["Pop", "Rock"]
    assert summary["unknown_genres"] == {"train": {"Jazz": 6}, "test": {"Jazz": 3}}
    assert set(pd.read_parquet(tmp_path / "out" / "train.parquet")["genre"]) == {"Pop", "Rock"}
    assert "  dropped as not in --genres: 'Jazz' 6\n" in result.stdout


def test_more_values_than_the_summary_names_are_marked(tmp_path):
    train, test = kaggle_frames(genres=["Pop", "Rock"])
    for row in range(7):
        train.loc[row, "Genre"] = f"fragment {row}"
    raw = tmp_path / "raw"
    raw.mkdir()
    train.to_csv(raw / "train.csv", index=False)
    test.to_csv(raw / "test.csv", index=False)
    prepared = prep.run(raw, tmp_path / "out")
    assert prepared.summary["dropped"]["train"]["unknown_genre"] == 7
    assert len(prepared.summary["unknown_genres"]["train"]) == prep.GENRE_EXAMPLES
    assert "'fragment 4' 1 ...\n" in prep.describe(prepared.summary)


@pytest.mark.slow
def test_kaggle_path_prepare_then_train_with_default_settings(tmp_path):
    from conftest import run_cli, tiny_overrides, tracking_uri

    raw_kaggle_misparsed(tmp_path / "raw")
    prepared = tmp_path / "prepared"
    result = data_command("prepare", "--raw", str(tmp_path / "raw"), "--out", str(prepared))
    assert result.returncode == 0, result.stderr
    overrides = [
        o
        for o in tiny_overrides(tmp_path, tmp_path, tmp_path)
        if not o.startswith(("data.train_path", "data.test_path", "data.genres"))
    ]
    trained = run_cli([*overrides, "mlflow.log_model=false"], env={"GENRE_EXP_DATA": str(prepared)})
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"data from $GENRE_EXP_DATA ({prepared})" in trained.stderr
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    assert "data.genres" not in run.data.tags["hydra_overrides"]
