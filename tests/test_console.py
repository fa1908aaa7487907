"""What the console shows: one line for arguments the app cannot take, TensorFlow's native log
lines kept off stderr, and ``--help``/``--cfg job`` without the heavy libraries."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides, write_kaggle_csv

from genre_exp import arguments
from genre_exp.config import config_dir
from genre_exp.console import LineFilter

COMMANDS = ["data", "predict", "promote", "compare", "runs"]
# absl's lines (the date is zero before absl is initialised), TensorFlow's own, and MLflow's INFO.
NATIVE_SHAPES = [
    re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\] "),
    re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "),
    re.compile(r"absl::InitializeLog"),
]
MLFLOW_INFO = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow")
HEAVY = ("pandas", "numpy", "mlflow", "tensorflow", "keras", "sklearn", "matplotlib")


def native_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(s.search(line) for s in NATIVE_SHAPES)]


def python_child(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A fresh interpreter running ``code`` (dedented), stdout and stderr captured as bytes;
    ``env`` adds variables to this one's, None as a value removes one."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        timeout=60,
        env={k: v for k, v in full_env.items() if v is not None},
    )


def assert_one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genre-exp: ")
    return lines[0]


# --- A word Hydra cannot parse -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--help"],
        ["train"],
        ["--cfg", "job", "train"],
        ["model=lstm", "train"],
        ["--info", "defaults", "train"],
        ["-m", "train", "model=lstm,lstm_dropout"],
    ],
)
def test_a_word_is_refused_in_one_line(argv):
    line = assert_one_line(run_cli(argv))
    assert "'train' is not a command or an override" in line
    assert f"commands: {', '.join(COMMANDS)}" in line
    assert "key=value" in line and "genre-exp --help" in line


def test_a_command_after_an_option_is_told_to_come_first():
    line = assert_one_line(run_cli(["-m", "data"]))
    assert "'data' is a command: put it first (genre-exp data --help)" in line


@pytest.mark.parametrize("argv", [["-m", "--cfg", "job"], ["--info", "-r"], ["-sc", "-m"]])
def test_two_modes_at_once_are_refused_in_one_line(argv):
    line = assert_one_line(run_cli(argv))
    assert "only one of --run, --multirun, --cfg, --info and --shell-completion" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["--hydra-help"],
        ["--cfg", "job"],
        ["-c", "job", "--resolve"],
        ["--cfg", "job", "-p", "model"],
        ["--cfg", "job", "--package", "training.early_stopping"],
        ["-cn", "config", "--cfg", "job"],
        ["--config-name", "config"],
        ["-cp", "conf"],
        ["--config-path", "conf"],
        ["-cd", "extra_conf"],
        ["--config-dir", "extra_conf"],
        ["--info"],
        ["--info", "defaults"],
        ["-i", "config", "model=lstm"],
        ["--experimental-rerun", "outputs/x/.hydra/config.pickle"],
        ["-sc", "install=bash"],
        ["--shell-completion"],
        ["-m", "model=lstm,lstm_dropout"],
        ["--multirun", "data=balanced"],
        ["-r", "model=lstm"],
        ["~model.dropout"],
        ["model.lstm_units=3", "data.genres=[a, b]"],
        ["+tags.note=baseline", "++tags.other=x"],
        ["+experiment=seed_balanced"],
        ["+hydra.job.env_set.X=1"],
        ["+model@extra=lstm"],
    ],
)
def test_hydra_options_and_their_values_are_not_words(argv):
    args = arguments.hydra_args(argv)
    assert args is not None
    assert arguments.refused(args.overrides, COMMANDS) is None


@pytest.mark.parametrize("argv", [["--version"], ["--cfg", "everything"], ["--no-such-option"]])
def test_what_hydras_parser_rejects_is_left_to_hydra(argv, capsys):
    assert arguments.hydra_args(argv) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "argv",
    [
        ["-p", "model", "--cfg", "job"],
        ["--cfg", "job", "--package", "model"],
        ["-cn", "config", "--cfg", "job"],
        ["--config-dir", str(config_dir()), "--cfg", "job"],
        ["--info", "defaults"],
        ["-sc", "install=bash"],
    ],
)
def test_hydra_options_with_values_still_work(argv):
    result = run_cli(argv)
    assert result.returncode == 0, result.stderr
    assert "not a command" not in result.stderr


# --- The schema is strict at composition ---------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("+model.lstm_unit=3", "model.lstm_unit"),
        ("++training.epoch=3", "training.epoch"),
        ("+data.columns.singer=artist", "data.columns.singer"),
        ("++mlflow.experiment_name=x", "mlflow.experiment_name"),
        ("+paths.cache_dir=/tmp", "paths.cache_dir"),
    ],
)
@pytest.mark.parametrize("mode", [[], ["--cfg", "job"], ["-m"]])
def test_adding_a_key_to_a_schema_group_is_refused(tmp_path, override, key, mode):
    result = run_cli([*mode, override, f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    line = assert_one_line(result)
    plus = "++" if override.startswith("++") else "+"
    assert f"'{plus}' adds a setting, but the schema fixes the {key.split('.')[0]} settings" in line
    assert f"drop the '{plus}' to set {key}" in line and "genre-exp --cfg job" in line
    assert list(tmp_path.iterdir()) == []  # nothing ran: no outputs/, no mlruns/


def test_tags_and_hydra_settings_can_still_be_added():
    result = run_cli(["--cfg", "job", "+tags.note=baseline", "+hydra.job.env_set.X=1"])
    assert result.returncode == 0, result.stderr
    assert "note: baseline" in result.stdout


def test_wrong_types_keep_hydras_message():
    result = run_cli(["--cfg", "job", "training.early_stopping.monitor=val_los"])
    assert result.returncode == 1
    assert "training.early_stopping.monitor" in result.stderr
    assert "Traceback" not in result.stderr


# --- TensorFlow's native log lines ---------------------------------------------------------

NATIVE = b"I0000 00:00:1795704797.341627    9146 port.cc:153] oneDNN custom operations are on.\n"
NATIVE_ERROR = (
    b"E0000 00:00:1795704799.585782    9146 node_def_util.cc:682] NodeDef mentions attribute "
    b"use_unbounded_threadpool which is not in the op definition\n"
)
ABSL_WARNING = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
)
TF_OWN = b"2026-01-30 22:44:42.456316: E external/local_xla/cuda_fft.cc:467] Unable to register\n"
FATAL = b"F0000 00:00:1795704799.585782    9146 kernel.cc:1] Check failed: x\n"


def test_line_filter_drops_whole_native_lines_and_keeps_the_rest_in_order():
    lines = LineFilter()
    out = lines.feed(b"first\n" + ABSL_WARNING + NATIVE + b"[2026][genre_exp][ERROR] - bad\n")
    out += lines.feed(NATIVE_ERROR[:20])  # a native line cut by the pipe: held
    assert lines.feed(b"") == b""
    out += lines.feed(NATIVE_ERROR[20:] + TF_OWN + FATAL + b"Error: E0000 is only text\n")
    out += lines.flush()
    assert (
        out == b"first\n[2026][genre_exp][ERROR] - bad\n" + FATAL + b"Error: E0000 is only text\n"
    )


def test_line_filter_passes_a_partial_line_at_once():
    lines = LineFilter()
    assert lines.feed(b"Continue? [y/n] ") == b"Continue? [y/n] "
    assert lines.feed(b"(default n)") == b"(default n)"
    assert lines.feed(b"\nI0000 00:00:1.5   9 a.cc:1] x\nnext") == b"\nnext"
    assert lines.feed(b"\r 50%|#####") == b"\r 50%|#####"


CHILD = f"import os, sys; os.write(2, {NATIVE!r}); print('child line', file=sys.stderr)"
SCRIPT = f"""
    import logging, os, subprocess, sys
    from genre_exp.console import hide_native_logs
    hide_native_logs()
    os.write(2, {NATIVE!r})
    print("python line 1", file=sys.stderr)
    os.write(2, {ABSL_WARNING!r} + {NATIVE_ERROR!r})
    logging.getLogger("genre_exp").error("a logged error")
    subprocess.run([sys.executable, "-c", {CHILD!r}])
    sys.stderr.write("partial, ")
    sys.stderr.flush()
    os.write(2, {FATAL!r})
    raise RuntimeError("the end")
"""


@pytest.mark.parametrize("level", [None, "2", "3"])
def test_python_errors_reach_stderr_whole_and_in_order(level):
    result = python_child(SCRIPT, {"TF_CPP_MIN_LOG_LEVEL": level})
    assert result.returncode == 1
    stderr = result.stderr.decode()
    head, traceback = stderr.split("Traceback (most recent call last):\n")
    assert head == "python line 1\na logged error\nchild line\npartial, " + FATAL.decode()
    assert re.fullmatch(
        r'  File "<string>", line \d+, in <module>\nRuntimeError: the end\n', traceback
    )


@pytest.mark.parametrize("level", ["0", "1"])
def test_a_user_who_asks_for_the_native_lines_sees_them(level):
    stderr = python_child(SCRIPT, {"TF_CPP_MIN_LOG_LEVEL": level}).stderr.decode()
    assert stderr.count(NATIVE.decode()) == 2  # the app's and its child's
    assert ABSL_WARNING.decode() in stderr and NATIVE_ERROR.decode() in stderr


def test_a_partial_line_is_not_held_back():
    """A question without a newline must show while the program waits for the answer."""
    code = """
        import sys
        from genre_exp.console import hide_native_logs
        hide_native_logs()
        sys.stderr.write("Continue? [y/n] ")
        sys.stderr.flush()
        print("answer:", sys.stdin.readline().strip(), file=sys.stderr)
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while b"Continue? [y/n] " not in seen and time.monotonic() < deadline:
            if select.select([process.stderr], [], [], 0.5)[0]:
                seen += os.read(process.stderr.fileno(), 1024)
        assert seen == b"Continue? [y/n] "
        _, rest = process.communicate(b"yes\n", timeout=20)
    finally:
        process.kill()
    assert rest == b"answer: yes\n"


@pytest.mark.slow
def test_a_training_run_shows_only_its_own_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # cli.py's default applies
    train, test = write_kaggle_csv(tmp_path)
    args = [*tiny_overrides(tmp_path / "project", train, test), "training.verbose=2"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert native_lines(output) == []
    assert [line for line in output.splitlines() if MLFLOW_INFO.search(line)] == []
    assert "Epoch 1/2" in result.stdout and "Epoch 2/2" in result.stdout
    assert re.search(r"\[genre_exp\]\[INFO\] - test accuracy \d\.\d{4}", result.stderr)

    shown = run_cli(args, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert native_lines(shown.stderr), shown.stderr[-3000:]


# --- Start-up ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, shown",
    [(["--help"], "experiment: best, seed_balanced"), (["--cfg", "job"], "lstm_units:")],
)
def test_help_and_cfg_job_import_no_heavy_library(argv, shown):
    code = f"""
        import atexit, sys
        heavy = {HEAVY!r}
        atexit.register(lambda: print("heavy:", [m for m in heavy if m in sys.modules]))
        sys.argv = ["genre-exp", *{argv!r}]
        from genre_exp.cli import main
        main()
    """
    result = python_child(code)
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.decode()
    assert shown in stdout
    assert stdout.splitlines()[-1] == "heavy: []"


def test_the_startup_benchmark_writes_its_numbers(tmp_path):
    out = tmp_path / "startup.json"
    script = Path(__file__).parents[1] / "benchmarks/startup.py"
    subprocess.run(
        [sys.executable, str(script), "--runs", "1", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    numbers = json.loads(out.read_text())
    assert numbers["help_seconds"] > 0 and numbers["cfg_job_seconds"] > 0
    assert numbers["baseline_seconds"] > 0 and numbers["help_ratio"] > 1
    assert numbers["help_cpu_seconds"] > 0 and len(numbers["git_commit"]) == 40
    assert numbers["cores"] == os.cpu_count()
    assert len(numbers["runs"]["help"]) == 1


@pytest.mark.slow
def test_a_sweeps_jobs_in_one_process_print_no_retracing_alarm(tmp_path, kaggle_csv):
    """Six jobs of the basic launcher share a process: each new model's first trace of Keras'
    predict function (one code object for all models) is counted as retracing by TensorFlow,
    which warned after the fifth; genre-exp drops that false alarm, and only that."""
    result = run_cli(
        [
            "-m",
            *tiny_overrides(tmp_path, *kaggle_csv),
            *("training.epochs=1", "mlflow.log_model=false", "training.seed=1,2,3,4,5,6"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("test accuracy") == 6
    assert "retracing" not in result.stderr
