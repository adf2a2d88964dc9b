"""A new user's first command on a bare clone (no ../shared/data beside it, no BIORAY_DATA_ROOT): the
quickstart runs end to end on the repository's sample-data/, shortened as the quickstart test is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.test_quickstart_e2e import QUICK, STAGES
from tests.support.cli import REPO


@pytest.mark.extended
@pytest.mark.timeout(1200)
def test_the_quickstart_runs_from_a_bare_clone(tmp_path):
    clone = tmp_path / "bioray"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{REPO}", str(clone)], check=True)
    assert not (clone.parent / "shared").exists()
    env = {**os.environ, "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": "", "PYTHONPATH": str(clone)}
    env.pop("BIORAY_DATA_ROOT", None)
    env.pop("BIORAY_WORKDIR", None)
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "run", "workflows/quickstart.yaml", *QUICK], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    status = subprocess.run([sys.executable, "-m", "bioray.cli", "status", "workflows/quickstart.yaml", "--json",
                             *QUICK], cwd=clone, env=env, capture_output=True, text=True, check=True)
    assert {row["stage"]: row["status"] for row in json.loads(status.stdout)} == {name: "cached" for name in STAGES}
    ingest = json.loads(next((clone / "work" / "quickstart" / "stages" / "ingest").glob("*/result.json")).read_text())
    assert ingest["metrics"]["ingest/documents_pmc-oa"] == 3  # the sample's three PMC articles
