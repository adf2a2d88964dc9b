"""Hugging Face directories inside MLflow transformers models, and registry URIs as starting points."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

from bioray.config import ConfigError
from bioray.pipeline.inputs import load_checked
from bioray.pipeline.model_refs import pin, resolve_model_refs
from bioray.pipeline.plan import build_plan
from bioray.tracking.models import hf_directory, pipeline_for


@pytest.fixture
def mlflow_layout(tmp_path):
    """What `mlflow.transformers.log_model` writes: weights in model/, the tokenizer in components/tokenizer/."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "aspirin", "dose"]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(tmp_path / "m" / "components" / "tokenizer"))
    config = BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        num_labels=3, id2label={0: "B", 1: "I", 2: "O"})
    BertForTokenClassification(config).save_pretrained(str(tmp_path / "m" / "model"))
    return tmp_path / "m"


def test_mlflow_layout_is_completed_only_in_a_copy_bioray_downloaded(mlflow_layout):
    with pytest.raises(FileNotFoundError, match="mlflow.transformers.load_model"):
        hf_directory(mlflow_layout)  # a user's directory is never written to
    directory = hf_directory(mlflow_layout, complete=True)
    assert directory == mlflow_layout / "model" and (directory / "tokenizer_config.json").is_file()
    assert pipeline_for(directory)[0] == "token-classification"


def test_alias_is_pinned_to_its_version_and_a_missing_one_is_a_config_error(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("enc")
    for _ in range(2):
        client.create_model_version("enc", source=str(tmp_path))
    client.set_registered_model_alias("enc", "champion", "1")
    assert pin("models:/enc@champion", client) == "models:/enc/1"
    assert pin("models:/enc/2", client) == "models:/enc/2"
    with pytest.raises(ConfigError, match="no 'champion' version of 'other'"):
        pin("models:/other@champion", client)


def test_an_arm_checkpoint_may_be_a_registered_encoder(tmp_path, mlflow_layout, write_workflow, quickstart_tree):
    """`encoders[].checkpoint: models:/<name>@<alias>` is pinned, downloaded and what the encoder stage copies
    (every key that takes a checkpoint takes an MLflow URI, resolved by model_refs)."""
    from bioray.pipeline.stages.base import StageEnv

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.create_registered_model("enc")
    client.create_model_version("enc", source=str(mlflow_layout))
    client.set_registered_model_alias("enc", "champion", "1")
    quickstart_tree["tracking"] = {"uri": store, "experiment": "refs"}
    quickstart_tree["encoders"] = [{"name": "general", "source": "checkpoint", "checkpoint": "models:/enc@champion"}]
    config = load_checked(write_workflow(quickstart_tree))
    assert resolve_model_refs(config) == {"encoders[0].checkpoint": "models:/enc/1"}
    local = Path(config.encoders[0].checkpoint)
    assert (local / "config.json").is_file() and local.is_relative_to(config.workdir)

    node = next(n for n in build_plan(config) if n.name == "encoder/general")
    assert node.params.checkpoint == str(local) and str(local / "config.json") in node.files  # in its key
    env = StageEnv(key="k", context=None, data_root=tmp_path / "data", datasets_root=tmp_path / "data",
                   train_storage=str(tmp_path), paths=config.paths)
    (tmp_path / "out").mkdir()
    node.stage.run(node, {}, tmp_path / "out", env)
    assert (tmp_path / "out" / "model" / "config.json").is_file()
