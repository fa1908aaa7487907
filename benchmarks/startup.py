"""Time ``genre-exp --help`` and ``genre-exp --cfg job`` against ``python -c pass``.

Each round runs the three commands once, in turn, so a busy spell on a shared machine slows
all three alike; the table shows each one's median wall time over the rounds, its ratio to
the baseline and its median CPU time. Writes JSON (``help_seconds`` and ``cfg_job_seconds``
are the wall-time medians).

    python benchmarks/startup.py --runs 15 --out benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the entry points must stay under (seconds), on the 2-core machine they are measured on.
LIMIT_SECONDS = 0.5


def entry_point() -> str:
    """The ``genre-exp`` script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "genre-exp"
    found = str(beside) if beside.exists() else shutil.which("genre-exp")
    if not found:
        sys.exit("startup.py: no genre-exp script; install the package (pip install -e .)")
    return found


def seconds(command: list[str]) -> tuple[float, float]:
    """Wall time, and the CPU time the command used (user + system): on a machine others
    share, wall time grows with their load, CPU time much less."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return wall, cpu


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (each runs all three)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/startup.json"))
    args = parser.parse_args()

    script = entry_point()
    commands = {
        "baseline": [sys.executable, "-c", "pass"],
        "help": [script, "--help"],
        "cfg_job": [script, "--cfg", "job"],
    }
    for command in commands.values():  # warm the file cache and the bytecode
        seconds(command)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            wall, used = seconds(command)
            runs[name].append(wall)
            cpu[name].append(used)
    median = {name: statistics.median(times) for name, times in runs.items()}
    cpu_median = {name: statistics.median(times) for name, times in cpu.items()}
    ratio = {name: median[name] / median["baseline"] for name in ("help", "cfg_job")}

    print(f"\n{args.runs} rounds; {os.cpu_count()} CPU cores; load average {os.getloadavg()}\n")
    print("| command | median | min | max | x python -c pass | CPU time (median) |")
    print("|---|---|---|---|---|---|")
    labels = {
        "baseline": "python -c pass",
        "help": "genre-exp --help",
        "cfg_job": "genre-exp --cfg job",
    }
    for name, label in labels.items():
        times = runs[name]
        factor = f"{ratio[name]:.1f}" if name in ratio else "1.0"
        print(
            f"| {label} | {median[name]:.3f} s | {min(times):.3f} s | {max(times):.3f} s "
            f"| {factor} | {cpu_median[name]:.3f} s |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "help_seconds": round(median["help"], 4),
                "cfg_job_seconds": round(median["cfg_job"], 4),
                "baseline_seconds": round(median["baseline"], 4),
                "help_ratio": round(ratio["help"], 2),
                "cfg_job_ratio": round(ratio["cfg_job"], 2),
                "limit_seconds": LIMIT_SECONDS,
                "help_cpu_seconds": round(cpu_median["help"], 4),
                "cfg_job_cpu_seconds": round(cpu_median["cfg_job"], 4),
                "baseline_cpu_seconds": round(cpu_median["baseline"], 4),
                "runs": {name: [round(t, 4) for t in times] for name, times in runs.items()},
                "cpu_runs": {name: [round(t, 4) for t in times] for name, times in cpu.items()},
                "cores": os.cpu_count(),
                "load_average": os.getloadavg(),
                "git_commit": git("rev-parse", "HEAD"),
                # The numbers are of the working tree, which may differ from that commit.
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                "python": platform.python_version(),
                "date": datetime.now().strftime("%Y-%m-%d_%H-%M-%S"),
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
