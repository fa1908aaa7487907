"""Fixtures: small generated data sets in the real layouts, and helpers to run the CLI.

Kaggle's ``train.csv`` has columns Artist, Song, Genre, Language, Lyrics; its ``test.csv`` has
Song, Song year, Artist, Genre, Lyrics, Track_id (no language; artist and song as slugs).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

KAGGLE_GENRES = [
    "Hip-Hop",
    "Indie",
    "Metal",
    "Pop",
    "Country",
    "Jazz",
    "Rock",
    "R&B",
    "Electronic",
    "Folk",
]
SHARED_WORDS = [
    "the",
    "a",
    "and",
    "i",
    "you",
    "me",
    "we",
    "love",
    "night",
    "time",
    "baby",
    "heart",
    "world",
    "way",
    "day",
]


def genre_words(genre: str) -> list[str]:
    # Words only one genre uses, so even a tiny model can learn something.
    stem = "".join(ch for ch in genre.lower() if ch.isalpha())
    return [f"{stem}{suffix}" for suffix in ("word", "sound", "beat", "line", "tune", "song")]


def make_lyrics(genre: str, rng: np.random.Generator, words: int = 40) -> str:
    vocabulary = genre_words(genre) * 3 + SHARED_WORDS
    return " ".join(rng.choice(vocabulary, size=words))


def kaggle_frames(genres=KAGGLE_GENRES, train_per_genre=None, test_per_genre=4, seed=0):
    """(train, test) frames in Kaggle's two layouts. Train is unbalanced by default."""
    rng = np.random.default_rng(seed)
    train_per_genre = train_per_genre or {g: 12 + 3 * i for i, g in enumerate(genres)}
    train_rows, test_rows = [], []
    for genre in genres:
        for k in range(train_per_genre[genre]):
            train_rows.append(
                {
                    "Artist": f"{genre} artist {k % 3}",
                    "Song": f"{genre} song {k}",
                    "Genre": genre,
                    "Language": "en" if k % 5 else "pt",
                    "Lyrics": make_lyrics(genre, rng),
                }
            )
        for k in range(test_per_genre):
            test_rows.append(
                {
                    "Song": f"{genre.lower()}-tune-{k}",
                    "Song year": 2000 + k,
                    "Artist": f"the-{genre.lower()}-band",
                    "Genre": genre,
                    "Lyrics": make_lyrics(genre, rng),
                    "Track_id": 1000 + len(test_rows),
                }
            )
    return pd.DataFrame(train_rows), pd.DataFrame(test_rows)


def write_kaggle_csv(folder: Path) -> tuple[Path, Path]:
    """train.csv and test.csv exactly in Kaggle's layouts, 10 genres, unbalanced train."""
    train, test = kaggle_frames()
    train_path, test_path = folder / "train.csv", folder / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    return train_path, test_path


@pytest.fixture
def kaggle_csv(tmp_path: Path) -> tuple[Path, Path]:
    return write_kaggle_csv(tmp_path)


@pytest.fixture
def parquet_data(tmp_path: Path) -> tuple[Path, Path]:
    """train.parquet and test.parquet in the normalised layout (lower-case columns)."""
    train, test = kaggle_frames()
    train.columns = [c.lower() for c in train.columns]
    test = test.rename(columns=str.lower).drop(columns=["song year", "track_id"])
    test["language"] = ""
    train_path, test_path = tmp_path / "train.parquet", tmp_path / "test.parquet"
    train.to_parquet(train_path)
    test.to_parquet(test_path)
    return train_path, test_path


def genre_override(genres=KAGGLE_GENRES) -> str:
    quoted = ",".join(g if g.replace("-", "").isalnum() else f"'{g}'" for g in genres)
    return f"data.genres=[{quoted}]"


def tiny_overrides(root: Path, train: Path, test: Path) -> list[str]:
    """Everything a CLI test needs to train in seconds, with outputs and MLflow under ``root``."""
    return [
        f"paths.root_dir={root}",
        f"data.train_path={train}",
        f"data.test_path={test}",
        genre_override(),
        "data.vocab_size=200",
        "data.sequence_length=24",
        "model.embedding_dim=8",
        "model.lstm_units=8",
        "training.epochs=2",
        "training.batch_size=16",
        "training.verbose=0",
        "mlflow.experiment_name=tests",
    ]


def run_cli(
    args: list[str], env: dict | None = None, timeout: int = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "genre_exp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def lstm(
    vocab_size: int,
    sequence_length: int,
    n_classes: int,
    embedding_dim=128,
    lstm_units=128,
    **settings,
):
    """An LSTM-family classifier built through the model registry, as training builds it."""
    from genre_exp.models import Inputs, build_classifier
    from genre_exp.models.lstm import LstmConfig

    return build_classifier(
        LstmConfig(embedding_dim=embedding_dim, lstm_units=lstm_units, **settings),
        Inputs(vocab_size, sequence_length, n_classes),
    )


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """``mlflow.set_tracking_uri`` also sets $MLFLOW_TRACKING_URI, which would point every
    later test (and the CLIs they start) at an earlier test's store."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def interrupt_when(
    args: list[str], ready, signum: int = signal.SIGTERM, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Start the CLI, send ``signum`` once ``ready()`` is true, and return how it ended."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "genre_exp", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and children inherit that: give
        # the job the default a user's terminal gives it, however the tests were started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.stderr.read()
            if time.monotonic() > deadline:
                pytest.fail(f"not ready to interrupt after {timeout:.0f} s")
            time.sleep(0.3)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def assert_figure_drawn(path: Path, hues: int = 1) -> None:
    """The PNG at ``path`` shows data, not just a frame: many distinct colours, and at least
    ``hues`` hues (of 12 around the colour wheel) each covering a visible area, as a figure's
    bars, lines or heat maps do; axes, ticks and text are black and grey."""
    import matplotlib.colors
    import matplotlib.image

    rgb = matplotlib.image.imread(path)[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50, f"{path.name}: almost blank"
    coloured = rgb[rgb.max(axis=1) - rgb.min(axis=1) > 0.2]
    assert len(coloured), f"{path.name}: only greys"
    hue = matplotlib.colors.rgb_to_hsv(coloured)[:, 0]
    drawn = np.bincount(np.round(hue * 12).astype(int) % 12, minlength=12)
    assert (drawn > 100).sum() >= hues, f"{path.name}: pixels per hue {drawn.tolist()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], url: str, env: dict, timeout: float):
    """Start ``command`` in its own process group and wait until ``url`` answers 200; fail the
    test if the process ends first (showing its stderr) or ``timeout`` passes. On exit the
    whole group is stopped: SIGTERM, up to 30 s for the server to end, then SIGKILL for what
    is left of the group."""
    # A file, not a pipe: nobody reads a pipe while the server runs, and a full one blocks it.
    with tempfile.TemporaryFile("w+") as stderr:
        server = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            # Servers fork workers; one signal to the group reaches them all.
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while server.poll() is None:
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} did not answer within {timeout:.0f} s")
                time.sleep(0.5)
            else:
                stderr.seek(0)
                pytest.fail(f"{command} ended before {url} answered:\n{stderr.read()[-3000:]}")
            yield server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=30)
            # Whatever of the group is still there once its leader ended (or would not end).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


# --- Services that deploy/start-services.sh starts (CI runs it before the tests) ---------------

START_SERVICES = "deploy/start-services.sh"
# Where start-services.sh leaves the URL of its PostgreSQL login role (root only).
POSTGRES_ADMIN_FILE = Path("/etc/genre-exp/postgres.url")
# CI sets it: there, a service that is missing is a failure, not a reason to skip.
REQUIRE_SERVICES = "GENRE_EXP_REQUIRE_SERVICES"


def postgres_admin_url() -> str | None:
    """$GENRE_EXP_POSTGRES_URL, else the role start-services.sh made: a role that may create
    databases and roles (no superuser needed)."""
    with contextlib.suppress(OSError):
        return os.environ.get("GENRE_EXP_POSTGRES_URL") or POSTGRES_ADMIN_FILE.read_text().strip()
    return None


@functools.cache
def postgres_absent() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    admin = postgres_admin_url()
    if admin is None:
        return (
            f"PostgreSQL is not set up: start it with {START_SERVICES} "
            f"(as root; it writes {POSTGRES_ADMIN_FILE}) or set $GENRE_EXP_POSTGRES_URL"
        )
    try:
        psycopg.connect(admin, connect_timeout=5).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0].removeprefix("connection failed: ")
        if "authentication failed" in reason:
            return f"PostgreSQL refused the login: run {START_SERVICES} again ({reason})"
        return f"PostgreSQL is not running: start it with {START_SERVICES} ({reason})"
    return None


@functools.cache
def slurm_absent() -> str | None:
    """Why the SLURM tests cannot run here, or None when they can: the cluster answers, its
    node takes jobs, and accounting answers (submitit polls job states with sacct)."""
    if shutil.which("sinfo") is None:
        return f"SLURM is not installed: start a cluster with {START_SERVICES}"
    for command in (["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-S", "now-1minutes"]):
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"SLURM is not running: start it with {START_SERVICES} ({exc})"
        if answer.returncode != 0:
            reason = (answer.stderr.strip().splitlines() or ["no output"])[-1]
            return f"SLURM is not running: start it with {START_SERVICES} ({reason})"
        if command[0] == "sinfo" and not {"idle", "mixed", "allocated"} & set(
            answer.stdout.split()
        ):
            return f"SLURM has no node taking jobs (sinfo: {answer.stdout.split()})"
    return None


def require(absent) -> None:
    """Skip the test (fail it under CI) when ``absent()`` names a reason."""
    reason = absent()
    if reason is None:
        return
    if os.environ.get(REQUIRE_SERVICES):
        pytest.fail(f"{reason} (${REQUIRE_SERVICES} is set)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The ``postgres`` and ``slurm`` markers: skip, before any fixture starts a server, a test
    whose service is absent."""
    for marker, absent in (("postgres", postgres_absent), ("slurm", slurm_absent)):
        if item.get_closest_marker(marker):
            require(absent)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database and a role owning it, for this test session, on the running PostgreSQL
    (``postgresql+psycopg://...``); both are dropped at the end."""
    require(postgres_absent)
    import psycopg
    from psycopg import sql

    admin = postgres_admin_url()
    _drop_abandoned_databases(admin)
    name = f"genre_exp_test_{os.getpid()}_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        # PostgreSQL 15: only a member of a role may create a database it owns.
        db.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(name)))
        db.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(*[sql.Identifier(name)] * 2))
        host, port = db.info.host, db.info.port
    try:
        yield f"postgresql+psycopg://{name}:{password}@{host}:{port}/{name}"
    finally:
        _drop_database(admin, name)


@pytest.fixture
def study_postgres_url():
    """A fresh database and role for one test's Optuna study (``postgresql+psycopg://...``),
    dropped after it: a study cannot live in MLflow's database (both keep their schema version
    in a table named ``alembic_version``)."""
    require(postgres_absent)
    import psycopg
    from psycopg import sql

    admin = postgres_admin_url()
    name = f"genre_exp_test_{os.getpid()}_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    with psycopg.connect(admin, autocommit=True) as db:
        role, database = sql.Identifier(name), sql.Identifier(name)
        db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
        db.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        db.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
        host, port = db.info.host, db.info.port
    try:
        yield f"postgresql+psycopg://{name}:{password}@{host}:{port}/{name}"
    finally:
        _drop_database(admin, name)


def _drop_database(admin: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin, autocommit=True) as db:
        # FORCE: a server that could not be stopped still holds connections.
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _drop_abandoned_databases(admin: str) -> None:
    """Databases of test sessions that were killed before their clean-up: the process whose id
    the name carries is gone (PostgreSQL is on this machine, so the id is a local one)."""
    import psycopg

    with psycopg.connect(admin, autocommit=True) as db:
        names = [
            name
            for (name,) in db.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'genre\\_exp\\_test\\_%'"
            )
        ]
    for name in names:
        pid = int(name.split("_")[3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _drop_database(admin, name)
        except PermissionError:
            pass  # another user's live session


class TrackingServer:
    """A team tracking server: ``mlflow server`` on a PostgreSQL store, its artifacts proxied
    (stored in ``artifacts``, which clients never see), on a loopback port. ``stop()`` and
    ``start()`` end it and start it again on the same port, store and artifacts."""

    def __init__(self, store: str, artifacts: Path):
        self.store, self.artifacts = store, artifacts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self, timeout: float = 180) -> None:
        assert self._running is None, "already running"
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        # The server starts uvicorn by name; without job execution it starts no job workers.
        env |= {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        command = [
            *(shutil.which("mlflow", path=env["PATH"]), "server"),
            *("--backend-store-uri", self.store),
            *("--artifacts-destination", str(self.artifacts), "--serve-artifacts"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"),
        ]
        running = contextlib.ExitStack()
        # The first start creates MLflow's tables in the database: tens of seconds.
        running.enter_context(serving(command, f"{self.url}/health", env, timeout))
        self._running = running

    def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            running.close()

    def __enter__(self) -> TrackingServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def tracking_server(postgres_url, tmp_path_factory):
    """One tracking server for the session (``.url``); a test that stops it starts it again."""
    with TrackingServer(postgres_url, tmp_path_factory.mktemp("server-artifacts")) as server:
        yield server


@pytest.fixture(scope="session")
def slurm() -> str:
    """The running SLURM cluster's default partition, once ``sinfo`` and ``sacct`` answer."""
    require(slurm_absent)
    partitions = subprocess.run(
        ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True
    ).stdout.split()
    default = [p.rstrip("*") for p in partitions if p.endswith("*")]
    assert default, f"no default partition: {partitions}"
    return default[0]
