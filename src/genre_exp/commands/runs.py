"""``genre-exp runs [--reap]``: the RUNNING runs of a store and whether their process lives.

A job killed by SIGKILL or the out-of-memory killer cannot close its MLflow run. Every new run
and sweep closes such runs of its own experiment; ``--reap`` does it for a whole store now.
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime

from genre_exp.commands import add_tracking_uri, one_line_errors
from genre_exp.config import tracking_uri


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-exp runs",
        description="List the RUNNING MLflow runs and whether the process that owns each is "
        "still alive; --reap marks those whose process is gone FAILED, with the reason as "
        "their 'error' tag. Only processes of this host can be checked.",
    )
    p.add_argument("--experiment", help="only this experiment (default: every experiment)")
    p.add_argument("--reap", action="store_true", help="mark runs whose process is gone FAILED")
    add_tracking_uri(p)
    return p


def run(args: argparse.Namespace) -> list[str]:
    """The lines to print: a table of the RUNNING runs (one per run, the owner process's state
    and why), then a summary."""
    import mlflow

    from genre_exp.errors import TrackingError
    from genre_exp.tracking import liveness, store
    from genre_exp.tracking.tags import HOST_TAG, PID_TAG

    uri = tracking_uri(args.tracking_uri)
    store.require_store(uri, "genre-exp runs")
    client = mlflow.MlflowClient(uri)
    if args.experiment:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise TrackingError(f"--experiment {args.experiment!r}: no such experiment in {uri}")
        experiments = {experiment.experiment_id: experiment.name}
    else:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    found = liveness.running(client, list(experiments))
    owners = {r.info.run_id: liveness.owner(r.data.tags) for r in found}
    reaped = {r.run_id for r in liveness.reap(uri, list(experiments))} if args.reap else set()
    where = f"in experiment {args.experiment!r} of {uri}" if args.experiment else f"in {uri}"
    if not found:
        return [f"No RUNNING run {where}."]
    rows = [("RUN ID", "EXPERIMENT", "RUN NAME", "STARTED", "OWNER", "PROCESS")]
    for r in found:
        tags, state = r.data.tags, owners[r.info.run_id]
        process = state.state + (", marked FAILED" if r.info.run_id in reaped else "")
        rows.append(
            (
                r.info.run_id,
                experiments[r.info.experiment_id],
                r.info.run_name or "",
                f"{datetime.fromtimestamp(r.info.start_time / 1000):%Y-%m-%d %H:%M}",
                f"{tags[HOST_TAG]}:{tags[PID_TAG]}"
                if HOST_TAG in tags and PID_TAG in tags
                else "-",
                f"{process}: {state.reason}" if state.reason else process,
            )
        )
    counts = Counter(state.state for state in owners.values())
    summary = f"{len(found)} RUNNING run(s) found {where}: " + ", ".join(
        f"{counts[s]} {s}" for s in (liveness.ALIVE, liveness.GONE, liveness.UNKNOWN)
    )
    if args.reap:
        summary += f"; {len(reaped)} marked FAILED (their 'error' tag says why)"
    elif counts[liveness.GONE]:
        summary += "; `genre-exp runs --reap` marks the gone ones FAILED"
    return [*aligned(rows), "", summary]


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines in columns; the last column (the longest text) is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    ]


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with one_line_errors("genre-exp runs"):
        lines = run(args)
    print("\n".join(lines))
