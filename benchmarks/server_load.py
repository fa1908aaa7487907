"""Load on a team tracking server: several processes (8 by default) log per-epoch metrics to
``mlflow server`` on PostgreSQL at the same time, each through genre-exp's own tracking code
(the run a job opens, ``tracking.runs.job_run``, and the Keras callback that logs every epoch,
``tracking.record.epoch_logger``: five metrics per epoch, as a training logs them), with no
training in between, so the server is the bottleneck. Then every run and metric point is
counted back from the server.

Reports the runs and metric points expected and found, the seconds from the start signal until
the last process has ended (its run closed, so every point sent), points per second, and the
machine and commit.

    python benchmarks/server_load.py --processes 8 --epochs 200 \
        --out benchmarks/results/server_load.json

Without ``--tracking-uri`` it starts its own server (2 workers, as the tests do) on a new
PostgreSQL database, made with the role deploy/start-services.sh creates (its URL in
/etc/genre-exp/postgres.url) or $GENRE_EXP_POSTGRES_URL, and drops the database afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from common import RESULTS, machine, write_json

EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"]
POSTGRES_ADMIN_FILE = Path("/etc/genre-exp/postgres.url")


def worker(args: argparse.Namespace) -> None:
    """One process: a run of its own, ``--epochs`` epochs logged once the start file exists."""
    import random

    from genre_exp.tracking import record, runs, store

    experiment_id = store.connect(args.tracking_uri, args.experiment)
    logger = record.epoch_logger()
    with runs.job_run(experiment_id, f"load/{args.worker}", {"load_worker": str(args.worker)}):
        Path(args.ready).touch()
        while not Path(args.go).exists():
            time.sleep(0.05)
        for epoch in range(args.epochs):
            logger.on_epoch_end(epoch, {m: random.random() for m in EPOCH_METRICS})


def count(tracking_uri: str, experiment: str) -> tuple[int, int, int]:
    """Runs FINISHED, runs in all, and metric points in the experiment."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    points = sum(
        len(client.get_metric_history(run.info.run_id, metric))
        for run in found
        for metric in EPOCH_METRICS
    )
    return sum(r.info.status == "FINISHED" for r in found), len(found), points


def measure(args: argparse.Namespace, tracking_uri: str, work: Path) -> dict:
    experiment = f"server-load-{os.getpid()}"
    common = [
        *(sys.executable, __file__, "--tracking-uri", tracking_uri),
        *("--experiment", experiment, "--epochs", str(args.epochs), "--go", str(work / "go")),
    ]
    ready = [work / f"ready-{i}" for i in range(args.processes)]
    logs = [work / f"worker-{i}.log" for i in range(args.processes)]
    with contextlib.ExitStack() as stack:
        workers = [
            subprocess.Popen(
                [*common, "--worker", str(i), "--ready", str(ready[i])],
                stdout=stack.enter_context(open(logs[i], "w")),
                stderr=subprocess.STDOUT,
            )
            for i in range(args.processes)
        ]
        stack.callback(lambda: [w.kill() for w in workers])
        while not all(p.exists() for p in ready):
            failed = [i for i, w in enumerate(workers) if w.poll() is not None]
            if failed:
                tail = logs[failed[0]].read_text()[-3000:]
                sys.exit(f"worker {failed[0]} ended before it was ready:\n{tail}")
            time.sleep(0.2)
        started = time.perf_counter()
        (work / "go").touch()
        codes = [w.wait() for w in workers]
        seconds = time.perf_counter() - started
    if any(codes):
        bad = next(i for i, c in enumerate(codes) if c)
        sys.exit(f"worker {bad} failed: {logs[bad].read_text()[-3000:]}")
    finished, found_runs, found_points = count(tracking_uri, experiment)
    expected_points = args.processes * args.epochs * len(EPOCH_METRICS)
    return {
        "processes": args.processes,
        "epochs_per_run": args.epochs,
        "metrics_per_epoch": len(EPOCH_METRICS),
        "runs_expected": args.processes,
        "runs_found": found_runs,
        "runs_finished": finished,
        "metric_points_expected": expected_points,
        "metric_points_found": found_points,
        "seconds": round(seconds, 2),
        "points_per_second": round(found_points / seconds, 1),
    }


@contextlib.contextmanager
def own_server(work: Path) -> Iterator[str]:
    """``mlflow server`` on a new PostgreSQL database, as the tests start it; its URL."""
    import psycopg
    from psycopg import sql

    admin = os.environ.get("GENRE_EXP_POSTGRES_URL") or POSTGRES_ADMIN_FILE.read_text().strip()
    name = f"genre_exp_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urllib.parse.urlsplit(admin)
    store = parts._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    bin_dir = str(Path(sys.executable).parent)
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        *(shutil.which("mlflow", path=env["PATH"]), "server", "--backend-store-uri", store),
        *("--artifacts-destination", str(work / "artifacts"), "--serve-artifacts"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
    ]
    with open(work / "server.log", "w") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=5):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the tracking server did not start: {(work / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=200, help="epochs each process logs")
    parser.add_argument("--tracking-uri", help="a running server (default: start one)")
    parser.add_argument("--out", default=str(RESULTS / "server_load.json"))
    # A worker process (started by this script).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="server-load-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            uri = args.tracking_uri or stack.enter_context(own_server(work))
            result = measure(args, uri, work)
    result["server"] = (
        "given (--tracking-uri)" if args.tracking_uri else "mlflow server --workers 2, PostgreSQL"
    )
    result |= machine()
    for key, value in result.items():
        print(f"{key}: {value}")
    write_json(args.out, result)
    lost = result["metric_points_expected"] - result["metric_points_found"]
    if lost or result["runs_finished"] != result["runs_expected"]:
        sys.exit(f"lost: {lost} metric points, {args.processes - result['runs_finished']} runs")


if __name__ == "__main__":
    main()
