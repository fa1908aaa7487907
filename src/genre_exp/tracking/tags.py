"""The names genre-exp gives its MLflow tags and the environment it passes to sweep jobs: one
home for each, read by the writers and the readers alike."""

from __future__ import annotations

# Set by a sweep's parent process for its jobs (launchers pass the environment on).
PARENT_ENV = "GENRE_EXP_PARENT_RUN_ID"
# Every job of a sweep carries its parent's run id.
SWEEP_TAG = "sweep_id"
# "parent" on a sweep's parent run, which only summarises its children.
PARENT_TAG = "sweep"
# Why a run ended FAILED.
ERROR_TAG = "error"
# The process that owns a run: its host, pid, and start time (clock ticks after boot), so a
# pid reused by a later process is not taken for the run's own.
HOST_TAG = "host"
PID_TAG = "pid"
STARTED_TAG = "pid_started"
# Who marked a run FAILED because its process was gone.
REAPED_TAG = "reaped_by"
