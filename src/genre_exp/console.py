"""TensorFlow's native log lines, kept off the console of a training run.

TensorFlow 2.21 logs through absl's C++ logging before absl is initialised, which writes
straight to file descriptor 2 whatever ``TF_CPP_MIN_LOG_LEVEL`` says (tensorflow/tensorflow
#100442, open): the ``absl::InitializeLog()`` warning, ``oneDNN custom operations are on``
twice, ``NodeDef mentions attribute use_unbounded_threadpool`` during training, ``oneDNN
supports DT_BOOL only ...``. Python cannot reach that logger, so ``hide_native_logs`` puts a
pipe on fd 2 and a thread copies every byte to the real stderr except whole lines of those
shapes. Child processes (a sweep's workers) inherit the pipe. FATAL lines always pass.

A user who sets ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 gets no filter, so sees every such line.

Besides, one false alarm of TensorFlow's Python logger is dropped (``hide_first_trace_warnings``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import select
import sys
import threading

# INFO, WARNING and ERROR lines as absl writes them (``I0000 00:00:1795704797.341627   9146
# port.cc:153] ...``, the date is zero before absl is initialised) and as TensorFlow's own
# logger writes them (``2026-01-30 22:44:42.456316: I tensorflow/core/util/port.cc:153] ...``).
NATIVE_LINE = re.compile(
    rb"(?:[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] )\S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR\r?\n"
)
# How such a line starts ('?' a severity letter, '#' a digit): a partial line that could be
# one is held until its end, any other is passed through at once.
NATIVE_STARTS = (
    b"?#### ##:##:",
    b"####-##-## ##:##:",
    b"WARNING: All log messages before absl::InitializeLog()",
)
# A held partial line is passed through after this much quiet: a native line comes in one
# write, so its end would have come with it.
QUIET_SECONDS = 0.05
# At exit, how long to let the thread finish copying: it ends at once unless a child process
# still holds the pipe.
EXIT_WAIT_SECONDS = 0.5

_installed_by: int | None = None


def native_logs_wanted() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() in ("0", "1")


def hide_native_logs() -> None:
    """Filter fd 2 for the rest of this process (once; not when the user asked for the logs;
    not on Windows, whose select() takes no pipes)."""
    global _installed_by
    if _installed_by is not None or native_logs_wanted() or os.name == "nt":
        return
    try:
        real_stderr = os.dup(2)
    except OSError:  # started with stderr closed: nothing to filter
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(
        target=copy_filtered, args=(read_end, real_stderr), name="stderr-filter", daemon=True
    )
    thread.start()
    _installed_by = os.getpid()
    atexit.register(_restore, real_stderr, thread)


def _restore(real_stderr: int, thread: threading.Thread) -> None:
    """Give fd 2 back and let the thread write out what is left in the pipe."""
    if os.getpid() != _installed_by:  # a forked child running its parent's atexit
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(real_stderr, 2)  # this process no longer writes to the pipe: the thread sees EOF
    thread.join(EXIT_WAIT_SECONDS)


def may_be_native(partial: bytes) -> bool:
    return any(_fits(partial, start) for start in NATIVE_STARTS)


def _fits(partial: bytes, start: bytes) -> bool:
    for byte, want in zip(partial, start, strict=False):
        if want == ord("?"):
            ok = byte in b"IWE"
        elif want == ord("#"):
            ok = 0x30 <= byte <= 0x39
        else:
            ok = byte == want
        if not ok:
            return False
    return True


class LineFilter:
    """Bytes in, the bytes to pass out: whole native lines dropped, everything else kept in
    order; a partial line is passed as soon as it cannot be a native line."""

    def __init__(self) -> None:
        self.pending = bytearray()  # the start of a line that may be native
        self.passing = False  # the current line's start was already passed

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        if self.passing:
            end = data.find(b"\n")
            if end < 0:
                return data
            out += data[: end + 1]
            data = data[end + 1 :]
            self.passing = False
        self.pending += data
        start = 0
        while (end := self.pending.find(b"\n", start)) >= 0:
            line = bytes(self.pending[start : end + 1])
            if not NATIVE_LINE.match(line):
                out += line
            start = end + 1
        del self.pending[:start]
        if self.pending and not may_be_native(self.pending):
            out += self.flush()
        return bytes(out)

    def flush(self) -> bytes:
        """The held partial line, passed: its end will be passed too."""
        held = bytes(self.pending)
        self.pending.clear()
        self.passing = bool(held)
        return held


def copy_filtered(read_end: int, real_stderr: int) -> None:
    """The thread's loop: read the pipe until EOF, write what passes to the real stderr."""
    lines = LineFilter()
    while True:
        timeout = QUIET_SECONDS if lines.pending else None
        if not select.select([read_end], [], [], timeout)[0]:
            _write(real_stderr, lines.flush())
            continue
        data = os.read(read_end, 65536)
        if not data:
            break
        _write(real_stderr, lines.feed(data))
    _write(real_stderr, lines.flush())
    os.close(read_end)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # stderr itself is gone (a closed pipe): keep draining, drop the output
        view = view[written:]


class _FirstTraceOfEachModel(logging.Filter):
    """TensorFlow counts retracing per code object, and every Keras model's predict function
    is a new closure of the same code: a sweep's jobs in one process (Optuna trials, the basic
    launcher) each trace their own models once, which TensorFlow reports as excessive
    retracing of one function, with advice that has nothing for the user to change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def hide_first_trace_warnings() -> None:
    """Drop that false alarm from TensorFlow's Python logger (once per process)."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _FirstTraceOfEachModel) for f in logger.filters):
        logger.addFilter(_FirstTraceOfEachModel())
