"""Workflow values that become paths, run names or registry names are untrusted: every hostile value is
a config error naming its key and the rule, before anything is written; a symlink planted in the
workdir cannot send a stage's output elsewhere. The tests check the filesystem around the workdir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bioray.cli import main
from bioray.config import NAME_RULE
from bioray.pipeline.inputs import load_checked
from bioray.workdir import UnsafePath, Workdir
from tests.support.cli import run_bioray

ESCAPE = "/tmp/bioray-escaped"  # where "../../../../tmp/bioray-escaped" would land from any workdir here
HOSTILE = {
    "traversal": "../../../../tmp/bioray-escaped",
    "absolute path": ESCAPE,
    "separator": "ncbi/disease",
    "backslash": "ncbi\\disease",
    "dot dot": "..",
    "inner dot dot": "a..b",
    "leading dot": ".hidden",
    "NUL": "ncbi\x00disease",
    "newline": "ncbi\ndisease",
    "tab": "ncbi\tdisease",
    "escape character": "ncbi\x1b[2Jdisease",
    "10,000 characters": "n" * 10_000,
    "empty": "",
    "space": "ncbi disease",
    "non-ASCII": "ncbi-dïsease",
}
# every workflow key whose value becomes a path component, a run/experiment name or a registry name
KEYS = {
    "name": lambda tree, v: tree.update(name=v),
    "tracking.experiment": lambda tree, v: tree["tracking"].update(experiment=v),
    "ingest.sources[0].name": lambda tree, v: tree["ingest"]["sources"][0].update(name=v),
    "finetune.datasets[0].name": lambda tree, v: tree["finetune"]["datasets"][0].update(name=v),
    "registry.model_name": lambda tree, v: tree["registry"].update(model_name=v),
    "registry.alias": lambda tree, v: tree["registry"].update(alias=v),
    "registry.gate.alias": lambda tree, v: tree["registry"].setdefault("gate", {}).update(alias=v),
}


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path):
    """A directory holding the workflow and its workdir; the test checks nothing appears beside them."""
    assert not os.path.exists(ESCAPE)
    yield tmp_path
    assert not os.path.exists(ESCAPE)
    assert not (tmp_path / "work").exists()  # rejected at load: not even the workdir was created


@pytest.mark.parametrize("key", KEYS)
def test_every_hostile_value_of_every_name_key_is_a_config_error(key, sandbox, quickstart_tree, data_root):
    runner = CliRunner()
    for label, value in HOSTILE.items():
        tree = yaml.safe_load(yaml.safe_dump(quickstart_tree))
        tree.update(workdir=str(sandbox / "work"), data_root=str(data_root))
        KEYS[key](tree, value)
        workflow = sandbox / "wf.yaml"
        workflow.write_text(yaml.safe_dump(tree, allow_unicode=True))
        before = _listing(sandbox)
        for command in ("validate", "status", "run"):
            result = runner.invoke(main, [command, str(workflow)])
            assert result.exit_code == 2, (key, label, command, result.output)
            message = result.output
            assert f"{key}: not a valid" in message, (key, label, command, message)
            assert "characters" in message and len(message) < 2000, (key, label, message)  # the rule, briefly
        assert _listing(sandbox) == before, (key, label)


def test_the_rule_is_documented_and_good_names_pass(quickstart_tree, write_workflow):

    assert "A-Z a-z 0-9 . _ -" in NAME_RULE
    quickstart_tree["finetune"]["datasets"][0]["name"] = "BC5CDR-chem_v1.2"
    quickstart_tree["registry"]["model_name"] = "bioray-ner.ncbi"
    config = load_checked(write_workflow(quickstart_tree))
    assert config.finetune.datasets[0].name == "BC5CDR-chem_v1.2"


@pytest.mark.parametrize("alias", ["latest", "v3", "champion.v2"])
def test_aliases_follow_the_registry_rule(alias, quickstart_tree, write_workflow):
    from bioray.config import ConfigError

    quickstart_tree["registry"]["alias"] = alias
    with pytest.raises(ConfigError, match=r"registry\.alias: not a valid alias"):
        load_checked(write_workflow(quickstart_tree))


def test_names_that_differ_only_by_case_are_one_name_twice(quickstart_tree, write_workflow):
    from bioray.config import ConfigError

    first = quickstart_tree["finetune"]["datasets"][0]
    quickstart_tree["finetune"]["datasets"].append({**first, "name": first["name"].upper()})
    with pytest.raises(ConfigError, match=r"finetune\.datasets\[1\]\.name: 'NCBI-DISEASE' is used twice"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["finetune"]["datasets"].pop()
    source = quickstart_tree["ingest"]["sources"][0]
    quickstart_tree["ingest"]["sources"].append({**source, "name": source["name"].title()})
    with pytest.raises(ConfigError, match=r"ingest\.sources\[\d\]\.name: .* is used twice"):
        load_checked(write_workflow(quickstart_tree))


def test_a_symlinked_stage_directory_pointing_outside_is_refused(tmp_path, quickstart_tree, data_root):
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "stages").mkdir(parents=True)
    outside.mkdir()
    (work / "stages" / "finetune").symlink_to(outside)  # planted: the fine-tuning outputs would land outside
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({**quickstart_tree, "workdir": str(work), "data_root": str(data_root)}))
    for command in ("status", "run"):
        done = run_bioray(command, str(workflow), timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "outside the workdir" in done.stderr and "finetune" in done.stderr, done.stderr
    assert list(outside.iterdir()) == []
    # the commands' logs only: no MLflow store, no Ray Train storage either
    assert sorted(p.name for p in work.iterdir()) == ["logs", "stages"]

    paths = Workdir(work)
    with pytest.raises(UnsafePath, match="outside the workdir"):
        paths.stage_tmp("finetune/ncbi-disease/seed-42", "0123456789abcdef")
    assert paths.stage_dir("ingest", "k") == work / "stages" / "ingest" / "k"  # what is inside stays allowed


def test_deleting_is_confined_to_stages_and_models(tmp_path):
    work, outside = tmp_path / "work", tmp_path / "outside"
    for directory in (work / "stages" / "x" / ".tmp-1", work / "models" / ".partial", work / "keep", outside):
        directory.mkdir(parents=True)
    paths = Workdir(work)
    paths.remove(work / "stages" / "x" / ".tmp-1")
    paths.remove(work / "models" / ".partial")
    for target in (outside, work / "keep", work / "stages", work, work / "stages" / ".." / "keep"):
        with pytest.raises(UnsafePath, match="deletes only inside"):
            paths.remove(target)
    (work / "stages" / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        paths.remove(work / "stages" / "link")  # the link resolves outside: nothing behind it is touched
    assert outside.is_dir() and (work / "keep").is_dir()
    assert not (work / "stages" / "x" / ".tmp-1").exists() and not (work / "models" / ".partial").exists()
