"""Where a pipeline command's output goes. Quiet (the default): the terminal gets bioray's own lines
(the `bioray.progress` logger: stages with i/N, their progress; bioray's warnings and errors; the
command's result), and everything else — library logging and warnings, and whatever Ray's core,
DeepSpeed or MLflow write to the process's stdout and stderr — goes to a log file whose path is
printed once. Verbose: everything on the terminal, as the libraries print it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Streams:
    """Where a command writes its own output: the terminal, even while the process's stdout and stderr
    go to the log file."""

    def __init__(self):
        self.redirected: tuple | None = None

    @property
    def out(self):
        return self.redirected[0] if self.redirected else sys.stdout

    @property
    def err(self):
        return self.redirected[1] if self.redirected else sys.stderr


terminal = _Streams()


class _Terminal(logging.Handler):
    """bioray's lines. On a TTY a progress line (a record with `transient`) is redrawn in place, so
    the stages' steps show as one live line under the stage lines."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream, self.tty, self.live = stream, stream.isatty(), False

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "bioray.progress" or (record.name.startswith("bioray") and
                                                    record.levelno >= logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        if self.tty and getattr(record, "transient", False):
            self.stream.write(f"\r\033[K{message}")
            self.live = True
        else:
            self.stream.write(("\r\033[K" if self.live else "") + message + "\n")
            self.live = False
        self.stream.flush()


@contextlib.contextmanager
def pipeline_output(log_file: Path, verbose: bool):
    """For the duration of a pipeline command: quiet or verbose output, as the module says; the
    command writes its own lines to `terminal.out` / `terminal.err`."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format=FORMAT)
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8")
    sink = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(sink, 1)  # the process's own stdout and stderr, C++ and child processes included
    os.dup2(sink, 2)
    os.close(sink)
    root = logging.getLogger()
    to_file, to_terminal = logging.StreamHandler(sys.stderr), _Terminal(err)
    to_file.setFormatter(logging.Formatter(FORMAT))
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    root.addHandler(to_terminal)
    logging.captureWarnings(True)
    err.write(f"bioray: full log in {log_file}\n")
    terminal.redirected = (out, err)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr, out, err):
            stream.flush()
        terminal.redirected = None
        root.removeHandler(to_terminal)
        root.removeHandler(to_file)
        logging.captureWarnings(False)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
