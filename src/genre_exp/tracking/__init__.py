"""Everything that talks to MLflow, by audience:

- ``store``: reach the tracking store (probe a server, create a SQLite store safely) and the
  experiment;
- ``runs``: one MLflow run per job, opened and always closed;
- ``record``: what a run logs (params, data, metrics, figures, the epoch logger, the model);
- ``liveness``: which process owns a RUNNING run, and closing the runs whose process is gone;
- ``queries``: reading back: runs, models, the registry and promotion;
- ``sweep``: the Hydra callback that gives every ``-m`` sweep one parent run;
- ``tags``: the names of the tags (and the environment variable) the others share.

MLflow is imported inside the functions that use it, so ``--help`` stays instant.
"""
