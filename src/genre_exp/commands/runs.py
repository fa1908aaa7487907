"""``genre-exp runs [--reap]``: the RUNNING runs of a store and whether their process lives.

A job killed by SIGKILL or the out-of-memory killer cannot close its MLflow run. Every new run
and sweep closes such runs of its own experiment; ``--reap`` does it for a whole store now.
"""

from __future__ import annotations

import argparse

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
    """The lines to print."""
    import mlflow

    from genre_exp.errors import TrackingError
    from genre_exp.tracking import liveness, store

    uri = tracking_uri(args.tracking_uri)
    store.require_store(uri, "genre-exp runs")
    client = mlflow.MlflowClient(uri)
    if args.experiment:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise TrackingError(f"--experiment {args.experiment!r}: not in {uri}")
        experiments = {experiment.experiment_id: experiment.name}
    else:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    running = client.search_runs(
        list(experiments), "attributes.status = 'RUNNING'", max_results=50000
    )
    reaped = {r.run_id for r in liveness.reap(uri, list(experiments))} if args.reap else set()
    lines = []
    for found in running:
        tags = found.data.tags
        reason = liveness.gone(tags)
        owner = f"{tags.get(liveness.HOST_TAG, '?')}:{tags.get(liveness.PID_TAG, '?')}"
        if found.info.run_id in reaped:
            state = f"marked FAILED: {reason}"
        elif reason:
            state = f"gone ({reason}); --reap marks it FAILED"
        elif tags.get(liveness.HOST_TAG) == liveness.process_tags()[liveness.HOST_TAG]:
            state = "alive"
        else:
            state = "on another host or not recorded: cannot tell"
        lines.append(
            f"{found.info.run_id}  {experiments[found.info.experiment_id]}  "
            f"{found.info.run_name}  {owner}  {state}"
        )
    summary = f"{len(running)} RUNNING run(s) in {uri}"
    return [*lines, summary + (f"; {len(reaped)} marked FAILED" if args.reap else "")]


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with one_line_errors("genre-exp runs"):
        lines = run(args)
    print("\n".join(lines))
