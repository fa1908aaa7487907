"""Reaching the tracking store: probe a server, create a SQLite store safely, find or create
the experiment."""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

from genre_exp.errors import TrackingError, first_line

# How long a job waits for a SQLite store another process is creating or upgrading.
CREATION_WAIT_S = 60.0
# A store not at MLflow's schema that has not changed for this long is nobody's work in
# progress. Creating one pauses for a second or two between steps; a loaded machine stretches
# that, and taking a store that is still being created for a finished one breaks it.
QUIET_S = 10.0
# A private file this old was left by a creator that was killed.
ABANDONED_S = 3600.0
# How genre-exp's MLflow client talks to a tracking server, each where the user has not set it.
CLIENT_SETTINGS = {
    # Retrying a request the server does not answer (refused, timed out, 429 or 5xx). MLflow's
    # defaults (7 retries, backoff factor 2, 120 s timeout) wait about 4 minutes per request,
    # and up to 18 for a server that accepts connections but never answers. Here: 8 tries, 0,
    # 2, 4, 8, 16, 32 and 64 s apart, each plus up to 1 s of jitter (so parallel jobs do not
    # all come back at once): a server restarted within about 2 minutes loses nothing, and one
    # that stays down stops the job after about 2 minutes (6 if it hangs: 30 s per try).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # One thread sends a job's per-epoch metrics (MLflow's default: 10). The server holds two
    # database connections for each such request (MLflow 3.17's log_batch opens a session
    # inside another) from a pool of 15 per worker; 8 jobs sending 10 requests at once drained
    # it, and requests that waited 30 s for a connection got a 400, which is not retried: their
    # epochs' metrics were lost (benchmarks/server_load.py).
    "MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE": "1",
}


def sqlite_file(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def client_settings() -> None:
    """genre-exp's settings for MLflow's client of a tracking server (``CLIENT_SETTINGS``), each
    where the environment has none: a user's own values win. Jobs a sweep starts inherit
    them."""
    for name, value in CLIENT_SETTINGS.items():
        os.environ.setdefault(name, value)


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

    client_settings()
    check_reachable(tracking_uri)
    db = sqlite_file(tracking_uri)
    try:
        if db is not None:
            artifact_location = artifact_location or (db.parent / "artifacts").as_uri()
            _ensure_sqlite_store(db, artifact_location, tracking_uri)
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


def _ensure_sqlite_store(db: Path, artifact_root: str, tracking_uri: str) -> None:
    """Create the store at ``db`` if there is none, and wait while someone else creates it.

    MLflow creates a missing SQLite store on first open and migrates it in place, so two
    processes opening a new path at once (parallel jobs, or a job and a UI or ``compare``
    polling it) both migrate the same file and one of them fails. Here the tables are built in
    a private file that is linked into place only if no store appeared meanwhile, and a store
    someone else is still creating is waited for rather than migrated a second time.
    """
    _remove_abandoned(db)
    if not db.exists():
        _create(db, artifact_root, tracking_uri)
    _wait_until_migrated(db, tracking_uri)


def _create(db: Path, artifact_root: str, tracking_uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    private = db.with_name(f".{db.name}.{uuid.uuid4().hex}.new")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        # Made here rather than by SQLite so that a folder that cannot be written fails at
        # once (MLflow retries opening a database for minutes); 0o644 is SQLite's own mode.
        os.close(os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError as exc:
        raise TrackingError(
            f"mlflow.tracking_uri={tracking_uri}: cannot create the store in {db.parent} "
            f"({exc.strerror or first_line(exc)})"
        ) from None
    try:
        SqlAlchemyStore(f"sqlite:///{private}", artifact_root).engine.dispose()
        # Atomic, and never replaces a store that appeared meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(private, db)
    finally:
        for leftover in _companions(private):
            leftover.unlink(missing_ok=True)


def _companions(db: Path) -> list[Path]:
    """The database file and the journals SQLite keeps beside it."""
    return [db, db.with_name(f"{db.name}-journal"), db.with_name(f"{db.name}-wal")]


def _remove_abandoned(db: Path) -> None:
    """Private files of a creator that was killed before it could remove them (SIGKILL, a
    node lost): creating a store takes seconds, so an old one has no owner left."""
    cutoff = time.time() - ABANDONED_S
    for leftover in db.parent.glob(f".{glob.escape(db.name)}.*.new*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _wait_until_migrated(db: Path, tracking_uri: str) -> None:
    """Return once the store is at MLflow's schema, or once nobody has changed it for
    ``QUIET_S``: then it is an old store or a file no MLflow is working on, and MLflow itself
    upgrades it or says what is wrong. Changes are observed here, not judged by file times,
    which a shared file system's clock can skew."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    start = last_change = time.monotonic()
    seen = None
    while True:
        version = _schema_version(db)
        if version == head:
            return
        now = time.monotonic()
        state = (version, [_file_state(f) for f in _companions(db)])
        if state != seen:
            seen, last_change = state, now
        elif now - last_change > QUIET_S:
            return
        if now - start > CREATION_WAIT_S:
            raise TrackingError(
                f"mlflow.tracking_uri={tracking_uri}: another process has been creating or "
                f"upgrading this store for {CREATION_WAIT_S:.0f} s and it is still not ready"
            )
        time.sleep(0.2)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _schema_version(db: Path) -> str | None:
    """The store's alembic revision; None while its tables are still being made (or it is
    locked, or not a database at all)."""
    try:
        with closing(
            sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=1)
        ) as connection:
            row = connection.execute("select version_num from alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None
