"""Reaching the tracking store: probe a server, create a SQLite store safely, find or create
the experiment."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from genre_exp.errors import TrackingError, first_line

log = logging.getLogger(__name__)

# How long a job waits for a SQLite store another process is creating.
CREATION_WAIT_S = 60.0


def sqlite_file(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail in seconds on a tracking server that is down (MLflow's own client retries for
    minutes); other stores have nothing to probe."""
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers; MLflow's own calls will tell whether it is a tracking server
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"mlflow.tracking_uri={tracking_uri}: tracking server unreachable ({reason})"
        ) from None


def require_store(tracking_uri: str, what: str) -> None:
    """For commands that read a store: a SQLite store that does not exist is an error, not a
    new empty store."""
    db = sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"{what}: no MLflow store at {tracking_uri}")


def connect(tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    A new SQLite store is created whole before anyone can open it, with its artifacts beside
    the database rather than in the working folder.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_reachable(tracking_uri)
    db = sqlite_file(tracking_uri)
    try:
        if db is not None:
            artifact_location = artifact_location or (db.parent / "artifacts").as_uri()
            _ensure_sqlite_store(db, artifact_location)
        mlflow.set_tracking_uri(tracking_uri)
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                return mlflow.create_experiment(
                    experiment_name, artifact_location=artifact_location
                )
            except MlflowException:
                # Another job of a parallel sweep created it first.
                experiment = mlflow.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"mlflow.experiment_name={experiment_name!r} is deleted in {tracking_uri}; "
                "restore it or choose another name"
            )
        return experiment.experiment_id
    except TrackingError:
        raise
    except Exception as exc:  # any store failure: bad URI, server down, unreadable database
        raise TrackingError(
            f"mlflow.tracking_uri={tracking_uri}: store unusable ({first_line(exc)})"
        ) from None


def _ensure_sqlite_store(db: Path, artifact_root: str) -> None:
    """Create the store at ``db`` if there is none, and wait until it is fully migrated.

    MLflow creates a missing SQLite store on first open and migrates it in place, so two
    processes opening a new path at once (parallel jobs, or a job and a UI or ``compare``
    polling it) both migrate the same file and one of them fails. Here the tables are built in
    a private file that is linked into place only if no store appeared meanwhile, and a store
    someone else is still creating is waited for rather than migrated a second time.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        private = db.with_name(f".{db.name}.{os.getpid()}.new")
        try:
            SqlAlchemyStore(f"sqlite:///{private}", artifact_root).engine.dispose()
            # Atomic, and never replaces a store that appeared meanwhile.
            with contextlib.suppress(FileExistsError):
                os.link(private, db)
        finally:
            private.unlink(missing_ok=True)
    _wait_until_migrated(db)


def _wait_until_migrated(db: Path) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    deadline = time.monotonic() + CREATION_WAIT_S
    while True:
        version = _schema_version(db)
        # A store at another version that nobody is writing is an old store: MLflow itself
        # says how to upgrade it.
        settled = time.time() - db.stat().st_mtime > 5
        if version == head or (version is not None and settled):
            return
        if time.monotonic() > deadline:
            raise TrackingError(
                f"{db}: another process has been creating this MLflow store for "
                f"{CREATION_WAIT_S:.0f} s and it is still not ready"
            )
        time.sleep(0.2)


def _schema_version(db: Path) -> str | None:
    """The store's alembic revision, or None while its tables are still being made."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as connection:
            row = connection.execute("select version_num from alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None
