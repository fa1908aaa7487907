"""SLURM, for real (README, "Scaling out"): a ``hydra/launcher=submitit_slurm`` sweep runs as jobs
of the one-node cluster with accounting that deploy/start-services.sh starts, logging to the
team tracking server. Skipped where that cluster or PostgreSQL is not running."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import run_cli, tiny_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]


def accounted(job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """The jobs' states as ``sacct`` lists them, once it lists them all as ended: the sweep has
    its results as soon as a job has written them, and the job ends, and its record reaches
    the accounting daemon, a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = dict(line.split("|") for line in listed.split())
        ongoing = {"PENDING", "RUNNING", "COMPLETING"}
        if set(job_ids) <= set(states) and not ongoing & set(states.values()):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(2)


def test_a_slurm_sweep_runs_as_cluster_jobs_under_one_parent(
    slurm, tracking_server, tmp_path, kaggle_csv
):
    import mlflow

    result = run_cli(
        [
            *("-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm}"),
            *("hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"),
            "model.dropout=0.0,0.1",
            *tiny_overrides(tmp_path, *kaggle_csv),
            *("training.epochs=1", "mlflow.log_model=false", "mlflow.experiment_name=slurm"),
        ],
        env={"MLFLOW_TRACKING_URI": tracking_server.url},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("slurm")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r != parent]
    assert sorted(c.data.params["model.dropout"] for c in children) == ["0.0", "0.1"]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_jobs"] == 2
    assert parent.data.metrics["sweep_failed"] == 0

    # submitit submits the sweep as one array job and keeps a folder per task, named by its id
    # (<array>_<task>), beside the array's own (<array>, the submission script).
    folders = tmp_path.glob("outputs/multirun/**/.submitit/*_*")
    jobs = sorted(p.name for p in folders if p.is_dir())
    assert len(jobs) == 2, jobs
    assert accounted(jobs) == dict.fromkeys(jobs, "COMPLETED")
