import json
import os

import pytest

from bioray.config import ConfigError
from bioray.pipeline.inputs import load_checked
from bioray.pipeline.plan import (
    build_plan,
    compute_keys,
    is_cached,
    needed_nodes,
    stage_dir,
)


def _keys(path, overrides=()):
    config = load_checked(path, list(overrides))
    return compute_keys(build_plan(config))


def test_graph_shape(write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["seeds"] = [1, 2]
    nodes = build_plan(load_checked(write_workflow(quickstart_tree)))
    names = [n.name for n in nodes]
    assert names[:4] == ["ingest", "vocab", "tokenize", "pretrain"]
    assert "finetune/ncbi-disease/seed-1" in names and "evaluate/ncbi-disease/seed-2" in names
    register = nodes[-1]
    assert register.name == "register" and set(register.inputs) == {"pretrain", "evaluate/ncbi-disease/seed-1",
                                                                      "evaluate/ncbi-disease/seed-2", "report"}
    position = {n: i for i, n in enumerate(names)}
    assert all(position[i] < position[n.name] for n in nodes for i in n.inputs)  # topological order


def test_a_stage_reads_its_inputs_by_role_and_its_params_validated(write_workflow, quickstart_tree):
    from pydantic import ValidationError

    from bioray.pipeline.stages.base import Node, validated

    config = load_checked(write_workflow(quickstart_tree))
    nodes = {n.name: n for n in build_plan(config)}
    assert nodes["pretrain"].needs == {"tokens": "tokenize", "vocab": "vocab"}
    assert nodes["register"].needs == {"encoder": "pretrain", "evaluations": ("evaluate/ncbi-disease/seed-42",),
                                       "report": "report"}
    outputs = {name: f"output of {name}" for name in nodes["register"].inputs}
    assert nodes["register"].inputs_by_role(outputs) == {
        "encoder": "output of pretrain", "report": "output of report",
        "evaluations": {"evaluate/ncbi-disease/seed-42": "output of evaluate/ncbi-disease/seed-42"}}
    with pytest.raises(ValidationError, match="steps"):  # what pydantic's model_copy(update=...) would let through
        validated(config.pretrain, steps=0)
    with pytest.raises(TypeError, match="params must be a PretrainConfig"):
        Node("pretrain", nodes["pretrain"].stage, {}, config.vocab)


def test_keys_are_stable(write_workflow, quickstart_tree):
    path = write_workflow(quickstart_tree)
    assert _keys(path) == _keys(path)


def test_finetune_lr_change_invalidates_only_downstream(write_workflow, quickstart_tree):
    path = write_workflow(quickstart_tree)
    before, after = _keys(path), _keys(path, ["finetune.lr=3e-5"])
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42", "report",
                       "register-task/ncbi-disease", "register"}


def test_tokenize_change_invalidates_training_but_not_ingest(write_workflow, quickstart_tree):
    path = write_workflow(quickstart_tree)
    before, after = _keys(path), _keys(path, ["tokenize.seq_len=64"])
    changed = {name for name in before if before[name] != after[name]}
    assert "ingest" not in changed and "vocab" not in changed
    assert {"tokenize", "pretrain", "finetune/ncbi-disease/seed-42", "register"} <= changed


def test_editing_a_module_a_stage_reaches_only_indirectly_makes_it_and_downstream_stale(
        write_workflow, quickstart_tree, tmp_path):
    """No hand-kept code lists: the key's code part is the stage's import closure, read from the
    source. Edits in a copy of the package: the attention kernel (pretraining reaches it through the
    training loop and the encoder), the CoNLL reader (NER fine-tuning and evaluation reach it through
    the dataset's format), and the factoid-QA task type (nothing in this workflow reaches it)."""
    import shutil

    from bioray.pipeline.closure import SOURCE_ROOT

    config = load_checked(write_workflow(quickstart_tree))
    nodes = build_plan(config)
    original = compute_keys(nodes)
    copy = tmp_path / "src"
    shutil.copytree(SOURCE_ROOT / "bioray", copy / "bioray", ignore=shutil.ignore_patterns("__pycache__"))

    def keys_after_editing(module: str) -> set[str]:
        source = copy.joinpath(*module.split(".")).with_suffix(".py")
        source.write_text(source.read_text() + "\n# edited\n")
        try:
            edited = compute_keys(nodes, source_root=copy)
        finally:
            source.write_text(source.read_text().removesuffix("\n# edited\n"))
        return {name for name in original if edited[name] != original[name]}

    downstream = {"finetune/ncbi-disease/seed-42", "evaluate/ncbi-disease/seed-42", "report",
                  "register-task/ncbi-disease", "register"}
    assert compute_keys(nodes, source_root=copy) == original  # the same code gives the same keys
    assert keys_after_editing("bioray.model.unpad") == {"pretrain"} | downstream
    assert keys_after_editing("bioray.tasks.formats.conll") == downstream
    assert keys_after_editing("bioray.tasks.qa_factoid") == set()
    assert keys_after_editing("bioray.data.pack") == {"tokenize", "pretrain"} | downstream


def test_input_file_change_invalidates_ingest(write_workflow, quickstart_tree, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one abstract about BRCA1 and cancer risk.\n")
    quickstart_tree["ingest"]["sources"] = [{"name": "t", "format": "text", "path": str(corpus)}]
    path = write_workflow(quickstart_tree)
    before = _keys(path)
    corpus.write_text("a different abstract about TP53 in tumours.\n")
    os.utime(corpus, ns=(1, 1))
    assert _keys(path)["ingest"] != before["ingest"]


def test_needed_nodes_stop_at_cached_outputs(write_workflow, quickstart_tree):
    config = load_checked(write_workflow(quickstart_tree))
    nodes = build_plan(config)
    keys = compute_keys(nodes)
    needed = needed_nodes(nodes, keys, config, ["pretrain"])
    assert [n.name for n in needed] == ["ingest", "vocab", "tokenize", "pretrain"]
    for name in ("vocab", "tokenize"):
        committed = stage_dir(config, name, keys[name])
        committed.mkdir(parents=True)
        (committed / "result.json").write_text(
            json.dumps({"name": name, "key": keys[name], "path": str(committed), "metrics": {}}))
        assert is_cached(config, name, keys[name])
    # pretrain reads both committed outputs; nothing sends it back to ingest
    assert [n.name for n in needed_nodes(nodes, keys, config, ["pretrain"])] == ["vocab", "tokenize", "pretrain"]


def test_uncommitted_output_is_not_cached(write_workflow, quickstart_tree):
    config = load_checked(write_workflow(quickstart_tree))
    keys = compute_keys(build_plan(config))
    partial = stage_dir(config, "ingest", keys["ingest"])
    partial.mkdir(parents=True)  # a crash left a directory but no committed result
    assert not is_cached(config, "ingest", keys["ingest"])


def test_tag_stage_follows_the_named_datasets_model(write_workflow, quickstart_tree):
    from bioray.pipeline.plan import build_plan

    quickstart_tree["tag"] = {"dataset": "ncbi-disease"}
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    assert nodes["tag/ncbi-disease"].inputs == ("finetune/ncbi-disease/seed-42", "ingest")
    quickstart_tree["tag"] = {"dataset": "bc5cdr"}
    with pytest.raises(ConfigError, match=r"tag\.dataset: 'bc5cdr' is not an NER dataset"):
        load_checked(write_workflow(quickstart_tree))
