"""Which process owns a RUNNING run, and closing the runs whose process is gone.

Every run records the host and process running it. A job killed by SIGKILL or the
out-of-memory killer cannot close its own run; the next run or sweep in the experiment (or
``genre-exp runs --reap``) finds the process gone and marks the run FAILED, saying why. Only
processes of this host can be checked: runs of other hosts, and runs that record no owner
(older runs), are left as they are.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from genre_exp.tracking.tags import ERROR_TAG, HOST_TAG, PID_TAG, REAPED_TAG, STARTED_TAG

# What can be told about the process that owns a RUNNING run.
ALIVE = "alive"
GONE = "gone"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Owner:
    state: str  # ALIVE, GONE or UNKNOWN
    # Why the process is gone, or why that cannot be told; empty when it is alive.
    reason: str = ""


def _stat(pid: int) -> tuple[str, str] | None:
    """The state letter and start time (clock ticks after boot) of process ``pid`` from
    /proc/<pid>/stat, or None where it cannot be read (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces, ')' and bytes in any
    # encoding; after its last ')' come plain fields, from the state (3) to the start time (22).
    fields = stat[stat.rindex(b")") + 1 :].split()
    return fields[0].decode(), fields[19].decode()


def process_start(pid: int) -> str:
    """The start time of process ``pid`` as the kernel counts it, or '' where it cannot be
    read."""
    stat = _stat(pid)
    return stat[1] if stat else ""


def process_tags() -> dict[str, str]:
    """The tags that name this process as a run's owner."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: process_start(pid)}


def owner(tags: Mapping[str, str]) -> Owner:
    """Whether the process that owns a run with these tags is alive, gone, or cannot be
    checked from here."""
    host, pid = tags.get(HOST_TAG, ""), tags.get(PID_TAG, "")
    if not host or not pid.isdigit() or int(pid) == 0:
        return Owner(UNKNOWN, "the run records no owner process (started by an older version?)")
    if host != socket.gethostname():
        return Owner(UNKNOWN, f"owned by host {host}; only this host's processes can be checked")
    if os.name == "nt":
        # No /proc, and os.kill(pid, 0) would send Ctrl-C there rather than probe.
        return Owner(UNKNOWN, "processes cannot be checked on Windows")
    stat = _stat(int(pid))
    if stat is None and _exists(int(pid)):
        # /proc cannot tell (none, or hidden): a reused pid is taken for the owner.
        return Owner(ALIVE)
    if stat is None or stat[0] in ("Z", "X"):  # a zombie has exited, only not been waited for
        return Owner(
            GONE, f"its process {pid} on {host} is gone (killed by SIGKILL or out of memory?)"
        )
    if tags.get(STARTED_TAG) and stat[1] != tags[STARTED_TAG]:
        return Owner(
            GONE, f"its process {pid} on {host} is gone (the pid now belongs to another process)"
        )
    return Owner(ALIVE)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def running(client, experiment_ids: Sequence[str]) -> list:
    """The RUNNING runs of these experiments, newest first."""
    if not experiment_ids:
        return []
    return client.search_runs(
        list(experiment_ids), "attributes.status = 'RUNNING'", max_results=50000
    )


@dataclass(frozen=True)
class Reaped:
    run_id: str
    run_name: str
    reason: str


def reap(tracking_uri: str, experiment_ids: Sequence[str]) -> list[Reaped]:
    """Mark FAILED every RUNNING run of these experiments whose process is gone, with the
    reason as its ``error`` tag and this process as its ``reaped_by`` tag."""
    import mlflow
    from mlflow.entities import RunTag

    client = mlflow.MlflowClient(tracking_uri)
    me = process_tags()
    reaped = []
    for run in running(client, experiment_ids):
        found = owner(run.data.tags)
        if found.state != GONE:
            continue
        client.log_batch(
            run.info.run_id,
            tags=[
                RunTag(ERROR_TAG, f"ended without closing its run: {found.reason}"),
                RunTag(REAPED_TAG, f"{me[HOST_TAG]}:{me[PID_TAG]}"),
            ],
        )
        client.set_terminated(run.info.run_id, "FAILED")
        reaped.append(Reaped(run.info.run_id, run.info.run_name, found.reason))
    return reaped
