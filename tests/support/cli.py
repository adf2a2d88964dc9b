"""bioray's CLI in a child process, as users run it: its own local Ray (RAY_ADDRESS cleared) and, unless
`env` says otherwise, the workflow's own MLflow store (MLFLOW_TRACKING_URI cleared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _command(args: tuple[str, ...], env: dict | None) -> dict:
    return {"args": [sys.executable, "-m", "bioray.cli", *args], "cwd": REPO, "text": True,
            "env": {**os.environ, "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": "", **(env or {})}}


def run_bioray(*args: str, env: dict | None = None, timeout: float = 900, stdin: str | None = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run(**_command(args, env), capture_output=True, timeout=timeout, input=stdin)


def start_bioray(*args: str, env: dict | None = None) -> subprocess.Popen:
    """In its own process group (driver and local Ray, killable together), output merged into stdout."""
    return subprocess.Popen(**_command(args, env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
