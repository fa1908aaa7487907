"""The tracking store: a new SQLite store is safe against concurrent openers, and a run that
cannot start leaves no store and no output folder behind."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from genre_exp.errors import TrackingError
from genre_exp.tracking import store

# One process of the race below. A reader polls each trial's store path in a tight loop, as
# `compare` or the UI would, from before it exists until every writer is done with it; each
# writer waits until the reader is polling, waits a random moment (so that it falls anywhere
# in the reader's in-place creation of the store), then calls `store.connect`. Each process
# prints its failures as JSON.
RACE = r"""
import json, os, random, sys, time
from pathlib import Path

role, base, trials, writers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import mlflow
if role == "writer":
    from genre_exp.tracking.store import connect
(base / f"ready.{os.getpid()}").touch()
while not (base / "go").exists():
    time.sleep(0.01)
random.seed(os.getpid())
failures = []
for trial in range(trials):
    folder = base / str(trial)
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    if role == "reader":
        folder.mkdir()
        (folder / "polling").touch()
        while len(list(folder.glob("done.*"))) < writers:
            try:
                mlflow.MlflowClient(uri).search_experiments()
                mlflow.set_tracking_uri(uri)
                mlflow.search_runs(search_all_experiments=True)
            except Exception as exc:
                failures.append(f"reader {trial}: {type(exc).__name__}: {exc}"[:300])
                time.sleep(0.05)
    else:
        while not (folder / "polling").exists():
            time.sleep(0.005)
        time.sleep(random.uniform(0, 2.5))
        try:
            connect(uri, "race")
        except Exception as exc:
            failures.append(f"writer {trial}: {type(exc).__name__}: {exc}"[:300])
        (folder / f"done.{os.getpid()}").touch()
print(json.dumps(failures))
"""


def race_store_creation(base: Path, trials: int, writers: int, env: dict) -> list[str]:
    """Run the race (one reader, ``writers`` writers, ``trials`` fresh store paths) and return
    every failure any process saw."""
    base.mkdir(parents=True)
    roles = ["reader"] + ["writer"] * writers
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, role, str(base), str(trials), str(writers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for role in roles
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(base.glob("ready.*"))) < len(roles):
            assert all(p.poll() is None for p in processes), "a race process died at start"
            assert time.monotonic() < deadline, "race processes not ready after 60 s"
            time.sleep(0.05)
        (base / "go").touch()
        outputs = [p.communicate(timeout=40 * trials)[0] for p in processes]
    finally:
        for process in processes:
            process.kill()
    assert all(p.returncode == 0 for p in processes), outputs
    return [failure for out in outputs for failure in json.loads(out)]


def clean_env() -> dict:
    """The environment a user's shell gives: no store or data chosen by a variable."""
    drop = {"MLFLOW_TRACKING_URI", "GENRE_EXP_DATA", "GENRE_EXP_ROOT"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_new_store_survives_a_reader_polling_it_while_it_is_created(tmp_path):
    failures = race_store_creation(tmp_path / "race", trials=3, writers=2, env=clean_env())
    assert failures == []
    for trial in range(3):
        db = tmp_path / "race" / str(trial) / "mlruns" / "mlflow.db"
        assert [p.name for p in db.parent.iterdir() if p.name.startswith(".")] == []


def test_store_on_a_read_only_folder_fails_at_once_in_one_line(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    code = (
        "from genre_exp.tracking import store\n"
        "from genre_exp.errors import TrackingError\n"
        "try:\n"
        f"    store.connect('sqlite:///{folder}/mlflow.db', 'x')\n"
        "except TrackingError as exc:\n"
        "    print(exc)\n"
    )
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        # Root writes through file modes: make the folder read-only in a mount namespace.
        remount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
        probe = subprocess.run(["unshare", "-m", "sh", "-c", remount], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a read-only folder as root: {probe.stderr!r}")
        command = ["unshare", "-m", "sh", "-c", f'{remount} && exec "$0" "$@"', *command]
    else:
        folder.chmod(0o555)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
    assert time.monotonic() - started < 30  # MLflow alone retries for about 100 s
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert result.stdout.strip() == (
        f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db: cannot create the store in "
        f"{folder} ({reason})"
    ), result.stderr[-2000:]
    assert list(folder.iterdir()) == []


@pytest.fixture
def quick_quiet(monkeypatch):
    """A store nobody changes is handed to MLflow after half a second instead of ten."""
    monkeypatch.setattr(store, "QUIET_S", 0.5)


def test_file_left_empty_by_a_killed_opener_becomes_a_store(tmp_path, quick_quiet):
    db = tmp_path / "mlflow.db"
    db.touch()  # what SQLite leaves when its opener dies before the first table
    started = time.monotonic()
    experiment_id = store.connect(f"sqlite:///{db}", "x")
    assert time.monotonic() - started < 20
    assert experiment_id != "0"


def test_file_that_is_no_database_is_one_line(tmp_path, quick_quiet):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database\n" * 100)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"store unusable \(.*file is not a database"):
        store.connect(f"sqlite:///{db}", "x")
    assert time.monotonic() - started < 20


def test_old_schema_store_gets_mlflows_advice(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store.connect(uri, "x")
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as connection, connection:
        connection.execute("update alembic_version set version_num = '451aebb31d03'")
    # Another process: this one keeps the store it opened, checked when it was current.
    code = (
        "from genre_exp.tracking import store\n"
        "store.QUIET_S = 0.5\n"
        "try:\n"
        f"    store.connect({uri!r}, 'x')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert result.stdout.startswith(f"TrackingError mlflow.tracking_uri={uri}: store unusable ")
    assert "found version 451aebb31d03" in result.stdout and "mlflow db upgrade" in result.stdout
    assert result.stdout.count("\n") == 1


def test_private_files_of_a_killed_creator_are_removed_once_old(tmp_path):
    abandoned = [tmp_path / ".mlflow.db.0123.new", tmp_path / ".mlflow.db.0123.new-journal"]
    recent = tmp_path / ".mlflow.db.4567.new"  # maybe another job creating the store now
    for path in [*abandoned, recent]:
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in abandoned:
        os.utime(path, (two_hours_ago, two_hours_ago))
    store.connect(f"sqlite:///{tmp_path}/mlflow.db", "x")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [recent.name]
    # The store made from a private file has the mode SQLite gives, readable by the group.
    assert (tmp_path / "mlflow.db").stat().st_mode & 0o777 == 0o644 & ~current_umask()


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def run_first(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A first run under ``root`` (nothing there yet), from a user's shell."""
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", f"paths.root_dir={root}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        cwd=root,
    )


def free_port() -> int:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "case",
    ["no_data", "train_only", "missing_file", "bad_column", "unknown_genre", "genres", "server"],
)
def test_run_that_cannot_start_leaves_nothing(tmp_path, case):
    from conftest import write_kaggle_csv

    root = tmp_path / "project"
    root.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    train, test = write_kaggle_csv(data)
    opera = pd.read_csv(train)
    opera.loc[0, "Genre"] = "Opera"
    opera.to_csv(data / "opera.csv", index=False)
    # Five genres the schema's list lacks: the line names three and counts the rest.
    opera.loc[1:4, "Genre"] = ["Blues", "Soul", "Funk", "Gospel"]
    opera.to_csv(data / "five.csv", index=False)
    files = [f"data.train_path={train}", f"data.test_path={test}"]
    overrides = {
        "no_data": [],
        "train_only": [f"data.train_path={train}"],
        "missing_file": [f"data.train_path={data / 'absent.csv'}", f"data.test_path={test}"],
        "bad_column": [*files, "data.columns.text=words"],
        "unknown_genre": [f"data.train_path={data / 'opera.csv'}", f"data.test_path={test}"],
        "genres": [f"data.train_path={data / 'five.csv'}", f"data.test_path={test}"],
        "server": [*files, f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}"],
    }[case]
    expected = {
        "no_data": "no data: no train/test .parquet or .csv in $GENRE_EXP_DATA (unset)",
        "missing_file": "absent.csv: file not found",
        "bad_column": "missing column 'words' (data.columns.text)",
        "train_only": "no data (data.test_path unset): no train/test .parquet or .csv in",
        "unknown_genre": "genres outside data.genres: 'Opera'",
        "genres": "(1 row) and 2 more; add them to data.genres",
        "server": "tracking server unreachable",
    }[case]
    result = run_first(root, *overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and expected in errors[0], output[-2000:]
    assert "INFO mlflow" not in output
    assert "Traceback" not in output
    assert list(root.iterdir()) == []


def test_run_that_fails_after_it_started_keeps_its_folder_and_failed_run(tmp_path, kaggle_csv):
    import mlflow
    from conftest import tracking_uri

    root = tmp_path / "project"
    root.mkdir()
    train, test = kaggle_csv
    result = run_first(
        root,
        f"data.train_path={train}",
        f"data.test_path={test}",
        "model.dropout=1.5",
        "mlflow.experiment_name=tests",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "model.dropout=1.5" in errors[0], result.stderr[-2000:]
    (log,) = (root / "outputs").rglob("genre_exp.log")
    assert "model.dropout=1.5" in log.read_text()
    client = mlflow.MlflowClient(tracking_uri(root))
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["hydra_output_dir"] == str(log.parent)
