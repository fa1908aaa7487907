"""The Hydra callback that gives every ``-m`` sweep one MLflow parent run.

Kept apart from the rest of ``tracking`` and light to import: Hydra instantiates it for every
command, ``--help`` included.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Started in the launching process before any job, it creates the store's tables and the
    experiment once (parallel jobs racing to create a new store lose runs) and the parent run.
    Jobs find the parent through an environment variable (inherited by launcher workers) and
    tag themselves with it; at the end the parent records how many jobs ran and failed, and
    the best child by the selection metric (validation, never the test split)."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.tracking_uri: str | None = None

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        import mlflow
        from hydra.core.hydra_config import HydraConfig

        from genre_exp.tracking import liveness, store
        from genre_exp.tracking.tags import PARENT_ENV, PARENT_TAG, SWEEP_TAG

        cfg = config
        self.tracking_uri = cfg.mlflow.tracking_uri
        experiment_id = store.connect(
            cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.artifact_location
        )
        for reaped in liveness.reap(self.tracking_uri, [experiment_id]):
            log.warning(
                "run %s (%s) marked FAILED: %s", reaped.run_id, reaped.run_name, reaped.reason
            )
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        client = mlflow.MlflowClient(self.tracking_uri)
        sweep_dir = str(cfg.hydra.sweep.dir)
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep/{Path(sweep_dir).parent.name}/{Path(sweep_dir).name}",
            tags={
                PARENT_TAG: "parent",
                "hydra_overrides": " ".join(overrides) or "(none)",
                "hydra_sweep_dir": sweep_dir,
                **liveness.process_tags(),
            },
        )
        self.parent_id = parent.info.run_id
        client.set_tag(self.parent_id, SWEEP_TAG, self.parent_id)
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._close, "KILLED")
        log.info("MLflow sweep parent run %s", self.parent_id)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        # Hydra calls this from a `finally`: an exception in flight means the sweep stopped.
        stopped = sys.exc_info()[1]
        if isinstance(stopped, KeyboardInterrupt):
            self._close("KILLED")
        else:
            self._close("FAILED" if stopped is not None else "FINISHED")

    def _close(self, status: str) -> None:
        import mlflow

        from genre_exp.selection import SELECTION_METRIC
        from genre_exp.tracking.queries import best_by
        from genre_exp.tracking.tags import PARENT_ENV
        from genre_exp.tracking.trials import STATE_TAG

        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        client = mlflow.MlflowClient(self.tracking_uri)
        experiment_id = client.get_run(parent_id).info.experiment_id
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=10000,
        )
        statuses = [c.info.status for c in children]
        failed = statuses.count("FAILED")
        # A pruned trial's run ends KILLED, as a stopped one does; its tag tells them apart.
        pruned = sum(c.data.tags.get(STATE_TAG) == "PRUNED" for c in children)
        client.log_metric(parent_id, "sweep_jobs", len(children))
        client.log_metric(parent_id, "sweep_failed", failed)
        client.log_metric(parent_id, "sweep_pruned", pruned)
        if failed:
            log.warning(
                "sweep: %d of %d jobs failed (MLflow parent run %s)",
                failed,
                len(children),
                parent_id,
            )
        scored = [
            c
            for c in children
            if c.info.status == "FINISHED" and SELECTION_METRIC in c.data.metrics
        ]
        if scored:
            best = best_by(SELECTION_METRIC)(scored, key=lambda c: c.data.metrics[SELECTION_METRIC])
            client.set_tag(parent_id, "best_run_id", best.info.run_id)
            client.set_tag(parent_id, "best_run_name", best.info.run_name)
            client.log_metric(
                parent_id, f"best_{SELECTION_METRIC}", best.data.metrics[SELECTION_METRIC]
            )
            if "test_macro_f1" in best.data.metrics:
                client.log_metric(
                    parent_id, "best_test_macro_f1", best.data.metrics["test_macro_f1"]
                )
        client.set_terminated(parent_id, status)
