"""Shared fixtures: where ../shared/data is, and a tiny valid workflow file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("BIORAY_DATA_ROOT", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "NCBI-disease").is_dir():
        pytest.fail(f"shared data not found at {DATA_ROOT} (set BIORAY_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture
def quickstart_tree() -> dict:
    return yaml.safe_load((REPO / "workflows" / "quickstart.yaml").read_text())


@pytest.fixture
def write_workflow(tmp_path, data_root):
    """Write a workflow dict as YAML (data_root and workdir pointed at real places) and return its path."""

    def write(tree: dict, name: str = "wf.yaml") -> Path:
        tree = {**tree, "data_root": str(data_root), "workdir": str(tmp_path / "work")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return write
