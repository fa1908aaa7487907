"""What the benchmark scripts share: running a command in a fresh process and measuring its
wall time, CPU time and peak memory; the data options and their Hydra overrides; the machine
and commit a result was measured on; writing the JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The seed notebook's test scores on Kaggle's 7,932-row test split (seed-results.md): another
# data set than lyrics-real, printed beside the seed presets' rows for reference only.
SEED_KAGGLE = {
    "seed_unbalanced": {"accuracy": 0.28, "macro_f1": 0.17},
    "seed_balanced": {"accuracy": 0.26, "macro_f1": 0.24},
    "seed_balanced_dropout": {"accuracy": 0.28, "macro_f1": 0.26},
}


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    # The process's peak resident memory (its largest waited-for child's, if larger).
    max_rss_mb: float
    returncode: int


# Runs argv[2:] and writes its wall time and resource usage to argv[1], as JSON. A child's
# peak memory (ru_maxrss) on Linux starts from its parent's at the fork, so a benchmark that
# holds a model or a big data frame would lend it to every run it measures: this small fresh
# process is the parent instead.
LAUNCHER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "max_rss_kb": usage.ru_maxrss, "returncode": code}, out)
sys.exit(code)
"""


def measure(
    command: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Measured:
    """Run ``command`` in a fresh process, its output to ``log`` (else discarded): wall time,
    CPU time and peak memory of that one run."""
    with (
        tempfile.TemporaryDirectory(prefix="measure-") as tmp,
        open(log, "w") if log else contextlib.nullcontext(subprocess.DEVNULL) as out,
    ):
        usage_file = Path(tmp) / "usage.json"
        subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(usage_file), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env or os.environ.copy(),
            check=False,
        )
        usage = json.loads(usage_file.read_text())
    return Measured(
        seconds=usage["seconds"],
        cpu_seconds=usage["cpu_seconds"],
        max_rss_mb=usage["max_rss_kb"] / 1024,  # Linux reports kilobytes
        returncode=usage["returncode"],
    )


def check(measured: Measured, what: str, log: Path | None) -> None:
    if measured.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        sys.exit(f"{what} failed (exit status {measured.returncode}):\n{tail}")


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--train-path", required=required, help="training split (.parquet)")
    parser.add_argument("--test-path", required=True, help="test split (.parquet or .csv)")
    parser.add_argument("--genres", required=required, help="comma-separated, in label order")
    parser.add_argument("--corpus", required=True, help="name of the data set, for the record")


def quote_genre(genre: str) -> str:
    # Hydra's override grammar needs quotes around values with characters such as '&'.
    return genre if genre.replace("-", "").replace("_", "").isalnum() else f"'{genre}'"


def data_overrides(train: str | Path, test: str | Path, genres: str) -> list[str]:
    quoted = ",".join(quote_genre(g) for g in genres.split(","))
    return [f"data.train_path={train}", f"data.test_path={test}", f"data.genres=[{quoted}]"]


def genre_exp(*overrides: str) -> list[str]:
    """``python -m genre_exp`` as a user runs it (this interpreter, so this environment)."""
    return [sys.executable, "-m", "genre_exp", *overrides]


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def machine() -> dict:
    """Where and on what code a result was measured."""
    return {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "git_commit": git("rev-parse", "HEAD"),
        # The numbers are of the working tree, which may differ from that commit.
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": datetime.now().strftime("%Y-%m-%d_%H-%M-%S"),
    }


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten: {path}")
