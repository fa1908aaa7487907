"""Which process owns a RUNNING run, and closing the runs whose process is gone.

Every run records the host and process running it. A job killed by SIGKILL or the
out-of-memory killer cannot close its own run; the next run or sweep in the experiment (or
``genre-exp runs --reap``) finds the process gone and marks the run FAILED, saying why. Only
processes of this host can be checked: runs of other hosts are left as they are.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from genre_exp.tracking.tags import ERROR_TAG, HOST_TAG, PID_TAG, REAPED_TAG, STARTED_TAG


def process_start(pid: int) -> str:
    """The start time of process ``pid`` as the kernel counts it, or '' where it cannot be read
    (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
    except OSError:
        return ""
    # Field 22; the command name (field 2) is in parentheses and may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """The tags that name this process as a run's owner."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: process_start(pid)}


def gone(tags: Mapping[str, str]) -> str | None:
    """Why the process that owns a run with these tags is gone, or None if it may be alive
    (alive here, on another host, or the run names no process)."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG, "")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    started = process_start(int(pid))
    if not started and _alive(int(pid)):
        return None  # no /proc to tell a reused pid from the original: assume alive
    if not started:
        return f"its process {pid} on {host} is gone (killed by SIGKILL or out of memory?)"
    if tags.get(STARTED_TAG) and started != tags[STARTED_TAG]:
        return f"its process {pid} on {host} is gone (the pid now belongs to another process)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Reaped:
    run_id: str
    run_name: str
    reason: str


def reap(tracking_uri: str, experiment_ids: Sequence[str]) -> list[Reaped]:
    """Mark FAILED every RUNNING run of these experiments whose process is gone."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    running = client.search_runs(
        list(experiment_ids), "attributes.status = 'RUNNING'", max_results=50000
    )
    me = process_tags()
    reaped = []
    for run in running:
        reason = gone(run.data.tags)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ERROR_TAG, f"ended without closing its run: {reason}")
        client.set_tag(run.info.run_id, REAPED_TAG, f"{me[HOST_TAG]}:{me[PID_TAG]}")
        client.set_terminated(run.info.run_id, "FAILED")
        reaped.append(Reaped(run.info.run_id, run.info.run_name, reason))
    return reaped
