"""One Optuna study, many machines (README, "Scaling out"): sweeps started from different
folders, each with its own project root, share a study on PostgreSQL and log to one tracking
server. Together they run the study's n_trials (no live sweep's trial is failed by another), and
a sweep killed outright has its trial marked failed by its heartbeats stopping, not by another
sweep finding it RUNNING; sweeps opening a new study database at once all get it. The tests
marked ``postgres`` need the PostgreSQL that deploy/start-services.sh starts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides, write_kaggle_csv
from omegaconf import OmegaConf

STUDY = "team-study"


def without_password(url: str) -> tuple[str, str]:
    """(the URL without its password, the password): the sweeps read it from $PGPASSWORD, as
    the README tells a team to, so that no job's config shows it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed._replace(password=None).render_as_string(hide_password=False), parsed.password


class Machine:
    """A folder of its own (data, Hydra's outputs), as on another machine, and the sweep it runs
    there: ``genre-exp -m hparams_search=lstm_optuna`` on the shared study and server."""

    def __init__(self, folder: Path, study_url: str, server_url: str, experiment: str) -> None:
        self.folder = folder
        self.experiment = experiment
        folder.mkdir()
        train, test = write_kaggle_csv(folder)
        storage, password = without_password(study_url)
        overrides = [o for o in tiny_overrides(folder, train, test) if "root_dir" not in o]
        self.args = [
            *("-m", "hparams_search=lstm_optuna"),
            *overrides,
            f"mlflow.experiment_name={experiment}",
            "mlflow.log_model=false",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.study_name={STUDY}",
        ]
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env |= {
            "GENRE_EXP_ROOT": str(folder),
            "MLFLOW_TRACKING_URI": server_url,
            "PGPASSWORD": password,
        }
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        self.log = (self.folder / "sweep.log").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genre_exp", *self.args, *extra],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
            # Its own process group: a kill reaches the sweep and anything it started.
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def results(self) -> dict:
        (path,) = (self.folder / "outputs" / "multirun").rglob("optimization_results.yaml")
        return OmegaConf.to_container(OmegaConf.load(path))


@pytest.fixture
def machines(tmp_path, study_postgres_url, tracking_server, request):
    """Two machines on one study database and one tracking server; whatever of their sweeps
    still runs at the end of the test is killed."""
    experiment = request.node.name
    pair = [
        Machine(tmp_path / name, study_postgres_url, tracking_server.url, experiment)
        for name in ("machine-a", "machine-b")
    ]
    yield pair
    for machine in pair:
        if machine.process is not None:
            machine.kill()
            machine.log.close()


def wait_for(condition, machines: list[Machine], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for machine in machines:
            assert machine.running(), f"{machine.folder.name} ended:\n{machine.stderr()[-3000:]}"
        assert time.monotonic() < deadline, f"not reached within {timeout:.0f} s"
        time.sleep(0.3)


def wait_to_end(machines: list[Machine], timeout: float = 600) -> list[Machine]:
    """The machines, in the order their sweeps ended."""
    ended: list[Machine] = []
    deadline = time.monotonic() + timeout
    while len(ended) < len(machines):
        ended += [m for m in machines if m not in ended and not m.running()]
        assert time.monotonic() < deadline, f"sweeps still running after {timeout:.0f} s"
        time.sleep(0.5)
    for machine in machines:
        assert machine.process.returncode == 0, machine.stderr()[-3000:]
    return ended


def trial_states(url: str) -> dict[int, str]:
    """{number: state} of the study's trials, read without Optuna (which would create the
    tables, racing the sweeps that do)."""
    import psycopg

    try:
        with psycopg.connect(url.replace("+psycopg", "")) as db:
            rows = db.execute(
                "SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
                "WHERE s.study_name = %s",
                (STUDY,),
            ).fetchall()
    except psycopg.errors.UndefinedTable:  # no sweep has created them yet
        return {}
    return {number: str(state) for number, state in rows}


def load_study(url: str):
    import optuna

    return optuna.load_study(study_name=STUDY, storage=url)


def overlap(a, b) -> bool:
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


@pytest.mark.postgres
@pytest.mark.slow
def test_two_sweeps_started_at_once_share_the_study(
    machines, study_postgres_url, tracking_server, tmp_path
):
    import mlflow

    n_trials = 6
    for machine in machines:
        machine.start(f"hydra.sweeper.n_trials={n_trials}", "training.epochs=2")
    ended = wait_to_end(machines)
    stderr = {m.folder.name: m.stderr() for m in machines}
    for text in stderr.values():
        assert "Traceback" not in text, text[-3000:]

    study = load_study(study_postgres_url)
    states = [t.state.name for t in study.trials]
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    # A trial each sweep asked for at the same instant as the other may run too.
    assert n_trials <= len(done) <= len(study.trials) <= n_trials + 2, states
    # Neither sweep took the other's RUNNING trial for an orphan.
    assert "FAIL" not in states and "RUNNING" not in states, states
    assert len({t.number for t in study.trials}) == len(study.trials)

    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name(machines[0].experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("sweep") == "parent"}
    jobs = {r.info.run_id: r for r in runs if r.info.run_id not in parents}
    assert len(parents) == 2
    # Every trial's run, and no other, is in the one experiment, and names its trial.
    assert sorted(t.user_attrs["mlflow_run_id"] for t in done) == sorted(jobs)
    for trial in done:
        run = jobs[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna_trial"] == str(trial.number)
        assert run.data.tags["optuna_study"] == STUDY

    # Both sweeps ran trials, at the same time: each asked for trials while the other's ran.
    by_machine = {m.folder.name: [] for m in machines}
    for trial in done:
        parent = parents[jobs[trial.user_attrs["mlflow_run_id"]].data.tags["mlflow.parentRunId"]]
        by_machine[Path(parent.data.tags["hydra_sweep_dir"]).parents[3].name].append(trial)
    a, b = by_machine.values()
    assert a and b, {name: [t.number for t in ts] for name, ts in by_machine.items()}
    assert any(overlap(x, y) for x in a for y in b)
    assert any(re.search(r"running elsewhere \(trials? \d", text) for text in stderr.values())

    # The best trial of the whole study, in optimization_results.yaml and the parent run; the
    # sweep that ended last saw every trial end.
    best = study.best_trial
    expected = {
        "study": STUDY,
        "best_trial": best.number,
        "best_value": pytest.approx(best.value),
        "best_run_id": best.user_attrs["mlflow_run_id"],
        "best_params": best.params,
    }
    assert {k: ended[-1].results()[k] for k in expected} == expected
    for parent in parents.values():
        copy = client.download_artifacts(
            parent.info.run_id, "optuna/optimization_results.yaml", str(tmp_path)
        )
        recorded = OmegaConf.load(copy)
        assert recorded.study == STUDY
        if len(done) == n_trials:  # else a sweep may have ended before the extra trial did
            assert recorded.best_trial == best.number
            assert recorded.best_run_id == best.user_attrs["mlflow_run_id"]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_sweeps_trial_is_failed_when_its_heartbeats_stop(machines, study_postgres_url):
    n_trials = 3
    # A grace period longer than a sweep takes to start: the second sweep finds the killed
    # sweep's trial with a recent heartbeat, as it would a live one's.
    grace, interval = 20, 1
    heartbeat = [
        f"hydra.sweeper.heartbeat_interval={interval}",
        f"hydra.sweeper.grace_period={grace}",
    ]
    first, second = machines

    # A trial long enough to be killed while it trains.
    long = ["training.epochs=500", "training.early_stopping.enabled=false"]
    first.start(f"hydra.sweeper.n_trials={n_trials}", *heartbeat, *long)
    wait_for(lambda: "RUNNING" in trial_states(study_postgres_url).values(), [first], 300)
    time.sleep(2)  # a few heartbeats recorded
    first.kill()
    killed_at = datetime.now()
    (orphan,) = [n for n, s in trial_states(study_postgres_url).items() if s == "RUNNING"]

    second.start(f"hydra.sweeper.n_trials={n_trials}", *heartbeat, "training.epochs=1")
    wait_to_end([second])
    stderr = second.stderr()

    # At its start the second sweep took the trial for a live one ...
    assert (
        f"0 of {n_trials} trials done, 1 running elsewhere (trial {orphan}); "
        f"{n_trials - 1} to run" in stderr
    ), stderr[-3000:]
    # ... and failed it once no heartbeat had come for the grace period.
    assert re.search(
        rf"trial {orphan} of study '{STUDY}': no heartbeat for \d+ s \(its worker died\): "
        "marked FAILED",
        stderr,
    ), stderr[-3000:]
    study = load_study(study_postgres_url)
    failed = study.trials[orphan]
    assert failed.state.name == "FAIL"
    # The grace period runs from the last heartbeat, up to one interval before the kill.
    assert (failed.datetime_complete - killed_at).total_seconds() >= grace - interval - 0.5
    states = [t.state.name for t in study.trials]
    assert sorted(states) == ["COMPLETE"] * n_trials + ["FAIL"], states
    assert second.results()["trials"] == {"COMPLETE": n_trials, "PRUNED": 0, "FAIL": 1}


@pytest.mark.postgres
def test_sweeps_opening_a_new_study_database_at_once_all_open_it(study_postgres_url):
    """On a new database, sweeps started at the same instant race to create Optuna's tables
    (PostgreSQL refuses all but one ``CREATE TYPE``): the losers try again."""
    code = """
import sys, time
from hydra_plugins.genre_exp_sweeper._sweep import open_storage
while time.time() < float(sys.argv[2]):
    pass
open_storage(sys.argv[1], 10, 60)
"""
    start = time.time() + 10  # every process has imported Optuna by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, study_postgres_url, str(start)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]
    assert trial_states(study_postgres_url) == {}  # the tables are there, with no trial


def test_a_grace_period_too_short_for_the_heartbeat_is_one_line(tmp_path, kaggle_csv):
    overrides = [o for o in tiny_overrides(tmp_path, *kaggle_csv) if not o.startswith("model.")]
    result = run_cli(
        [
            *("-m", "hparams_search=tfidf_linear_optuna", *overrides),
            "hydra.sweeper.heartbeat_interval=10",
            "hydra.sweeper.grace_period=15",
        ]
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "hydra.sweeper.grace_period=15: at least twice hydra.sweeper.heartbeat_interval=10 "
        "expected, so that a late heartbeat never gets a live sweep's trial marked failed"
    ) in result.stderr.splitlines()[-1]
