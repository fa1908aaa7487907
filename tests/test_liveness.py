"""Runs whose process is gone (SIGKILL, out of memory) are found and marked FAILED: by the next
run or sweep of the experiment, or by ``genre-exp runs --reap``; runs whose process lives, of
another host, or with no owner recorded are left alone. Real processes, real SQLite stores."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import interrupt_when, run_cli, tiny_overrides, tracking_uri

from genre_exp.tracking import liveness

FOREVER = ["training.epochs=100000", "training.early_stopping.enabled=false"]


def client_for(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


def runs_of(root: Path, experiment: str = "tests") -> dict:
    """Run name -> run."""
    client = client_for(root)
    found = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def checkpoints(root: Path) -> int:
    """How many jobs under ``root`` hold a checkpoint: they finished an epoch (logged it, then
    checkpointed it), and have not FINISHED since (that deletes it)."""
    return len(list((root / "outputs").rglob("checkpoint/state.json")))


def runs_command(root: Path, *args: str) -> list[str]:
    result = run_cli(["runs", "--tracking-uri", tracking_uri(root), *args])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


def row(lines: list[str], run_id: str) -> list[str]:
    """The cells of the run's line in ``genre-exp runs``' table."""
    (line,) = [line for line in lines if line.startswith(run_id)]
    return re.split(r"\s{2,}", line, maxsplit=5)


def reap_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "marked FAILED" in line]


def assert_reaped(run, reason: str) -> None:
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == f"ended without closing its run: {reason}"
    assert run.data.tags["reaped_by"].startswith(f"{socket.gethostname()}:")


def test_runs_command_reaps_only_runs_whose_process_is_gone(tmp_path):
    from genre_exp.tracking.store import connect

    host = socket.gethostname()
    uri = tracking_uri(tmp_path)
    client = client_for(tmp_path)
    experiment = connect(uri, "tests")
    other_experiment = connect(uri, "other")

    def running(name: str, pid: int | None, started: str = "", where: str = experiment):
        tags = {} if pid is None else {"host": host, "pid": str(pid), "pid_started": started}
        return client.create_run(where, run_name=name, tags=tags).info.run_id

    ended = subprocess.Popen(["sleep", "0"])
    ended.wait()
    # A zombie: killed, not yet waited for by its parent (this test).
    zombie = subprocess.Popen(["sleep", "600"])
    zombie.send_signal(signal.SIGKILL)
    # A live process whose name holds ')', spaces and a byte that is not UTF-8.
    odd = tmp_path / os.fsdecode(b"odd) (name \xff")
    odd.symlink_to("/bin/sleep")
    live = subprocess.Popen([odd, "600"])
    try:
        me = liveness.process_tags()
        ids = {
            "ended": running("ended", ended.pid),
            "zombie": running("zombie", zombie.pid, liveness.process_start(zombie.pid)),
            "live": running("live", live.pid, liveness.process_start(live.pid)),
            "me": client.create_run(experiment, run_name="me", tags=me).info.run_id,
            "reused": running("reused", os.getpid(), str(int(me["pid_started"]) + 1)),
            "other host": client.create_run(
                experiment, run_name="other host", tags={**me, "host": f"not-{host}"}
            ).info.run_id,
            "no owner": running("no owner", None),
            "elsewhere": running("elsewhere", ended.pid, where=other_experiment),
        }
        gone = f"its process {{}} on {host} is gone (killed by SIGKILL or out of memory?)"
        reused = (
            f"its process {os.getpid()} on {host} is gone (the pid now belongs to another process)"
        )

        listed = runs_command(tmp_path)
        header = ["RUN ID", "EXPERIMENT", "RUN NAME", "STARTED", "OWNER", "PROCESS"]
        assert re.split(r"\s{2,}", listed[0]) == header
        # Columns line up: every row's owner starts where the header's OWNER does.
        owner_column = listed[0].index("OWNER")
        for name, run_id in ids.items():
            line = next(line for line in listed if line.startswith(run_id))
            assert line[owner_column - 2 : owner_column + 1].startswith("  "), line
            assert line[owner_column] != " ", line
            assert row(listed, run_id)[2] == name
        owners = {name: row(listed, run_id)[4:] for name, run_id in ids.items()}
        assert owners == {
            "ended": [f"{host}:{ended.pid}", f"gone: {gone.format(ended.pid)}"],
            "zombie": [f"{host}:{zombie.pid}", f"gone: {gone.format(zombie.pid)}"],
            "live": [f"{host}:{live.pid}", "alive"],
            "me": [f"{host}:{os.getpid()}", "alive"],
            "reused": [f"{host}:{os.getpid()}", f"gone: {reused}"],
            "other host": [
                f"not-{host}:{os.getpid()}",
                f"unknown: owned by host not-{host}; only this host's processes can be checked",
            ],
            "no owner": [
                "-",
                "unknown: the run records no owner process (started by an older version?)",
            ],
            "elsewhere": [f"{host}:{ended.pid}", f"gone: {gone.format(ended.pid)}"],
        }
        assert listed[-1] == (
            f"8 RUNNING run(s) found in {tracking_uri(tmp_path)}: 2 alive, 4 gone, 2 unknown; "
            "`genre-exp runs --reap` marks the gone ones FAILED"
        )
        assert {r.info.status for r in runs_of(tmp_path).values()} == {"RUNNING"}

        reaped = runs_command(tmp_path, "--reap", "--experiment", "tests")
        assert row(reaped, ids["ended"])[5] == f"gone, marked FAILED: {gone.format(ended.pid)}"
        assert row(reaped, ids["live"])[5] == "alive"
        assert reaped[-1].endswith("; 3 marked FAILED (their 'error' tag says why)")
        assert "elsewhere" not in "\n".join(reaped)
        runs = runs_of(tmp_path)
        assert_reaped(runs["ended"], gone.format(ended.pid))
        assert_reaped(runs["zombie"], gone.format(zombie.pid))
        assert_reaped(runs["reused"], reused)
        for name in ("live", "me", "other host", "no owner"):
            assert runs[name].info.status == "RUNNING", name
            assert "reaped_by" not in runs[name].data.tags
        assert runs_of(tmp_path, "other")["elsewhere"].info.status == "RUNNING"

        everywhere = runs_command(tmp_path, "--reap")
        assert everywhere[-1].endswith(
            ": 2 alive, 1 gone, 2 unknown; 1 marked FAILED (their 'error' tag says why)"
        )
        assert_reaped(runs_of(tmp_path, "other")["elsewhere"], gone.format(ended.pid))
    finally:
        live.kill()
        live.wait()
        zombie.wait()

    missing = run_cli(["runs", "--tracking-uri", uri, "--experiment", "missing"])
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"genre-exp runs: error: --experiment 'missing': no such experiment in {uri}"
    )


@pytest.mark.slow
def test_killed_training_is_reaped_by_the_next_run_and_still_resumes(tmp_path, kaggle_csv):
    overrides = [*tiny_overrides(tmp_path, *kaggle_csv), "mlflow.log_model=false"]
    killed = interrupt_when(
        [*overrides, *FOREVER, "mlflow.run_name=killed"],
        lambda: checkpoints(tmp_path) >= 1,
        signal.SIGKILL,
    )
    assert killed.returncode == -signal.SIGKILL
    run = runs_of(tmp_path)["killed"]
    assert run.info.status == "RUNNING"  # nothing could close it
    host, pid = run.data.tags["host"], run.data.tags["pid"]
    assert host == socket.gethostname() and pid != str(os.getpid())
    assert run.data.tags["pid_started"].isdigit()
    reason = f"its process {pid} on {host} is gone (killed by SIGKILL or out of memory?)"

    listed = runs_command(tmp_path)
    assert row(listed, run.info.run_id)[4:] == [f"{host}:{pid}", f"gone: {reason}"]
    assert runs_of(tmp_path)["killed"].info.status == "RUNNING"  # listing changes nothing

    nxt = run_cli([*overrides, "training.epochs=1", "mlflow.run_name=next"])
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    (warning,) = reap_warnings(nxt.stderr)
    assert f"[WARNING] - run {run.info.run_id} (killed) marked FAILED: {reason}" in warning
    runs = runs_of(tmp_path)
    assert_reaped(runs["killed"], reason)
    assert runs["next"].info.status == "FINISHED"
    assert runs["next"].data.tags["pid"] not in (pid, str(os.getpid()))

    # A reaped run resumes like any killed run, and then names its new owner.
    state = Path(run.data.tags["hydra_output_dir"]) / "checkpoint" / "state.json"
    epochs = json.loads(state.read_text())["epoch"] + 1
    resumed = run_cli(
        [*overrides, f"training.epochs={epochs}", f"training.resume={run.info.run_id}"]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not reap_warnings(resumed.stderr)
    run = runs_of(tmp_path)["killed"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epochs_trained"] == epochs
    assert run.data.tags["host"] == host
    assert run.data.tags["pid"] not in (pid, runs["next"].data.tags["pid"])
    assert run.data.tags["pid_started"].isdigit()
    # Why the killed job ended no longer describes a run that went on and finished.
    assert "error" not in run.data.tags and "reaped_by" not in run.data.tags


@pytest.mark.slow
def test_sweep_whose_launcher_was_killed_is_reaped_with_its_job(tmp_path, kaggle_csv):
    overrides = [*tiny_overrides(tmp_path, *kaggle_csv), "mlflow.log_model=false"]

    # The first job finishes; the second trains until the launcher is killed.
    def second_job_checkpointed() -> bool:
        # The jobs run one after the other, each writing its vocabulary first; the first
        # job's model checkpoint is deleted once it FINISHED, so one left is the second's.
        vocabularies = list((tmp_path / "outputs").rglob("checkpoint/vocabulary.json"))
        return len(vocabularies) >= 2 and checkpoints(tmp_path) >= 1

    killed = interrupt_when(
        ["-m", *overrides, *FOREVER[1:], "training.epochs=1,100000"],
        second_job_checkpointed,
        signal.SIGKILL,
    )
    assert killed.returncode == -signal.SIGKILL
    # While the sweep ran, its live parent and jobs were left alone by its jobs' reaping.
    assert not reap_warnings(killed.stderr)
    runs = runs_of(tmp_path)
    (parent,) = [r for r in runs.values() if r.data.tags.get("sweep") == "parent"]
    jobs = {r.data.params["training.epochs"]: r for r in runs.values() if r is not parent}
    assert parent.info.status == "RUNNING"
    assert jobs["1"].info.status == "FINISHED" and "reaped_by" not in jobs["1"].data.tags
    assert jobs["100000"].info.status == "RUNNING"
    assert jobs["100000"].data.tags["pid"] == parent.data.tags["pid"]  # the basic launcher

    nxt = run_cli([*overrides, "training.epochs=1", "mlflow.run_name=next"])
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    reason = (
        f"its process {parent.data.tags['pid']} on {socket.gethostname()} is gone "
        "(killed by SIGKILL or out of memory?)"
    )
    warnings = reap_warnings(nxt.stderr)
    assert len(warnings) == 2
    for run in (parent, jobs["100000"]):
        assert any(f"run {run.info.run_id} ({run.info.run_name})" in w for w in warnings)
        assert_reaped(client_for(tmp_path).get_run(run.info.run_id), reason)
    assert client_for(tmp_path).get_run(jobs["1"].info.run_id).info.status == "FINISHED"
    assert runs_of(tmp_path)["next"].info.status == "FINISHED"
